-- Per-workspace executor settings. Kernels have no network unless their workspace allows it.
CREATE TABLE workspace_executor_settings (
    workspace_id  uuid PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    network       boolean NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
