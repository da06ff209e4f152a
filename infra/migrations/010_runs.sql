-- The run queue: a commit ("run this cell") is a row, stored before the API answers, holding
-- the source exactly as committed. Executors claim rows with FOR UPDATE SKIP LOCKED under a
-- lease they renew; a run whose lease lapses was in flight on a worker that died.

CREATE TABLE runs (
    id               uuid PRIMARY KEY,
    seq              bigserial NOT NULL,
    notebook_id      uuid NOT NULL REFERENCES notebooks (id) ON DELETE CASCADE,
    cell_id          text NOT NULL,
    source           text NOT NULL,
    language         text NOT NULL DEFAULT 'python',
    state            text NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'done', 'error', 'cancelled')),
    reason           text NOT NULL DEFAULT 'user',
    requested_by     text,
    requested_at     timestamptz NOT NULL DEFAULT now(),
    claimed_by       text,
    lease_until      timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    execution_count  integer,
    error            text,
    outputs          jsonb NOT NULL DEFAULT '[]'::jsonb
);
CREATE INDEX runs_queued_idx ON runs (seq) WHERE state = 'queued';
CREATE INDEX runs_running_idx ON runs (notebook_id) WHERE state = 'running';
CREATE INDEX runs_notebook_idx ON runs (notebook_id, seq);
