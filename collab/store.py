"""The document store: each notebook's Yjs document as a snapshot plus an update log."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

NOTIFY_CHANNEL = "weft_documents"


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """What loading a document reads: apply ``updates`` in order."""

    updates: list[bytes]
    last_seq: int
    # Updates logged after the snapshot: compaction is due when this grows past a threshold.
    tail_length: int


class DocumentStore:
    """Appends, loads and compacts documents in PostgreSQL.

    >>> store = DocumentStore(pool)
    >>> await store.append([(notebook_id, 1, update)])
    >>> doc = await store.load(notebook_id)
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def load(self, notebook_id: uuid.UUID) -> StoredDocument:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            snapshot = await conn.fetchrow(
                "SELECT seq, data FROM document_snapshots WHERE notebook_id = $1", notebook_id
            )
            since = snapshot["seq"] if snapshot else -1
            rows = await conn.fetch(
                "SELECT seq, data FROM document_updates"
                " WHERE notebook_id = $1 AND seq > $2 ORDER BY seq",
                notebook_id,
                since,
            )
        updates = [bytes(snapshot["data"])] if snapshot else []
        updates += [bytes(r["data"]) for r in rows]
        last_seq = rows[-1]["seq"] if rows else max(since, 0)
        return StoredDocument(updates=updates, last_seq=last_seq, tail_length=len(rows))

    async def append(self, rows: Sequence[tuple[uuid.UUID, int, bytes]]) -> None:
        """Append many notebooks' updates in one statement (one round trip, one commit)."""
        if not rows:
            return
        ids, seqs, data = zip(*rows, strict=True)
        # The notification (notebook id and last seq, never the update: payloads are small)
        # is delivered at commit, to every server that has the notebook loaded (feed.py).
        await self._pool.execute(
            "WITH appended AS (INSERT INTO document_updates (notebook_id, seq, data)"
            " SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bytea[])"
            " RETURNING notebook_id, seq)"
            " SELECT pg_notify($4, notebook_id::text || ':' || max(seq) || ':'"
            " || (extract(epoch FROM clock_timestamp()) * 1000)::bigint)"
            " FROM appended GROUP BY notebook_id",
            list(ids),
            list(seqs),
            list(data),
            NOTIFY_CHANNEL,
        )

    async def updates_after(
        self, notebook_id: uuid.UUID, seq: int
    ) -> tuple[tuple[int, bytes] | None, list[tuple[int, bytes]]]:
        """What a server that has everything up to ``seq`` lacks: a newer snapshot if the
        log was compacted past ``seq``, and the logged updates after it, in order."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            snapshot = await conn.fetchrow(
                "SELECT seq, data FROM document_snapshots WHERE notebook_id = $1 AND seq > $2",
                notebook_id,
                seq,
            )
            since = snapshot["seq"] if snapshot else seq
            rows = await conn.fetch(
                "SELECT seq, data FROM document_updates WHERE notebook_id = $1 AND seq > $2"
                " ORDER BY seq",
                notebook_id,
                since,
            )
        return (
            (snapshot["seq"], bytes(snapshot["data"])) if snapshot else None,
            [(r["seq"], bytes(r["data"])) for r in rows],
        )

    async def heads(self, notebook_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The last logged seq of each notebook (one query, for catching missed notices)."""
        records = await self._pool.fetch(
            "SELECT notebook_id, max(seq) AS seq FROM document_updates"
            " WHERE notebook_id = ANY($1::uuid[]) GROUP BY notebook_id",
            notebook_ids,
        )
        return {r["notebook_id"]: r["seq"] for r in records}

    async def last_seq(self, notebook_id: uuid.UUID) -> int:
        value = await self._pool.fetchval(
            "SELECT greatest((SELECT max(seq) FROM document_updates WHERE notebook_id = $1),"
            " (SELECT seq FROM document_snapshots WHERE notebook_id = $1), 0)",
            notebook_id,
        )
        return int(value)

    async def compact(self, notebook_id: uuid.UUID, seq: int, snapshot: bytes) -> None:
        """Replace the log up to ``seq`` with ``snapshot`` (which covers at least that much)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO document_snapshots (notebook_id, seq, data) VALUES ($1, $2, $3)"
                " ON CONFLICT (notebook_id) DO UPDATE SET seq = EXCLUDED.seq,"
                " data = EXCLUDED.data, created_at = now()"
                " WHERE document_snapshots.seq < EXCLUDED.seq",
                notebook_id,
                seq,
                snapshot,
            )
            await conn.execute(
                "DELETE FROM document_updates WHERE notebook_id = $1 AND seq <= $2",
                notebook_id,
                seq,
            )
