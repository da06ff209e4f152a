-- Workspaces, notebooks, and each notebook's Yjs document as snapshot + update log.

CREATE TABLE workspaces (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notebooks (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    title         text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notebooks_workspace_idx ON notebooks (workspace_id, created_at);

-- The full document state as one Yjs update, covering every logged update up to seq.
CREATE TABLE document_snapshots (
    notebook_id  uuid PRIMARY KEY REFERENCES notebooks (id) ON DELETE CASCADE,
    seq          bigint NOT NULL,
    data         bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Every accepted update, appended before it is broadcast. Loading a document applies the
-- snapshot, then the updates after its seq in order.
CREATE TABLE document_updates (
    notebook_id  uuid NOT NULL REFERENCES notebooks (id) ON DELETE CASCADE,
    seq          bigint NOT NULL,
    data         bytea NOT NULL,
    PRIMARY KEY (notebook_id, seq)
);
