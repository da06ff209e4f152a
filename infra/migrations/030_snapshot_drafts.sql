-- A compaction's new snapshot, written before the snapshot row is locked (collab/storage/
-- document_store.py, compact): every append of a notebook share-locks its snapshot row, and
-- a writer's round carries every notebook's updates, so the time PostgreSQL takes to compress
-- and write a large snapshot must not be spent holding that row. A row here lives only
-- between the two steps of one compaction (one left by a crash is overwritten next time).
CREATE TABLE document_snapshot_drafts (
    notebook_id  uuid PRIMARY KEY REFERENCES notebooks (id) ON DELETE CASCADE,
    seq          bigint NOT NULL,
    data         bytea NOT NULL
);
