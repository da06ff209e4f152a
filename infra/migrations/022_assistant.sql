-- Assistant generations as every server sees them (ai/shared.py). A generation runs on the
-- server that started it, in its memory; each state change is also written here, so a
-- request that reaches another server can show it, and pass accept, reject or cancel on to
-- the server running it (NOTIFY weft_assist).
CREATE TABLE assistant_generations (
    id           uuid PRIMARY KEY,
    notebook_id  uuid NOT NULL REFERENCES notebooks (id) ON DELETE CASCADE,
    cell_id      text NOT NULL,
    node         text NOT NULL,
    requester    uuid NOT NULL,
    state        text NOT NULL,
    public       jsonb NOT NULL,
    -- Writes are queued; a lower version never replaces a higher one.
    version      bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX assistant_generations_active ON assistant_generations (notebook_id, cell_id)
    WHERE state IN ('streaming', 'pending');
CREATE INDEX assistant_generations_updated ON assistant_generations (updated_at);
