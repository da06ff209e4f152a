"""The document store: each notebook's Yjs document as a snapshot plus an update log.

Invariants every server relies on (several servers append to one notebook's log):

- The snapshot at seq S holds exactly the logged updates up to S: compaction folds the
  stored rows (``collab.storage.fold``), never a server's live document, which may also
  hold updates that are accepted but not yet logged (they will be logged above S, and a
  server that applied such a snapshot would let its clients build on updates the log has
  not ordered yet).
- No update is ever logged at or below the snapshot's seq. Servers number their appends
  from their own view of the log; one that has not yet heard of another's appends picks
  seqs that are taken, and is told so by the unique key, unless compaction has already
  deleted those rows. So an append share-locks the snapshot row and is refused if any of
  its seqs is not above it, and compaction (which moves the snapshot) waits for appends in
  progress, or they wait for it and then see its new seq.
- The log above the snapshot has no gaps, and every update in it depends only on the
  snapshot and on updates with a smaller seq (a server numbers an update above everything
  it had applied when it accepted it). Loading and catching up apply rows in seq order and
  stop at a gap. y-py 0.6 silently drops an update applied before its dependencies, so this
  order is not an optimisation: it is what keeps every server's document complete.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from collab.storage.database import DATABASE_ERRORS
from collab.storage.fold import fold

NOTIFY_CHANNEL = "weft_documents"

# One statement, one round trip: share-lock each notebook's snapshot row (compaction updates
# it, so the two exclude each other; in READ COMMITTED a lock that had to wait returns the
# row as the compaction committed it; in notebook_id order, as deletes lock them:
# collab/storage/catalog.py), refuse every notebook with a seq at or below its
# snapshot, insert the others' rows, and notify (delivered at commit) for those, unless the
# server knows no other server would hear it (collab.sync.other_nodes).
_APPEND_TEMPLATE = """
WITH incoming AS MATERIALIZED ({incoming}), floors AS MATERIALIZED (
    SELECT notebook_id, seq FROM document_snapshots
    WHERE notebook_id IN (SELECT notebook_id FROM incoming)
    ORDER BY notebook_id FOR SHARE
), refused AS MATERIALIZED (
    SELECT DISTINCT i.notebook_id FROM incoming i JOIN floors f USING (notebook_id)
    WHERE i.seq <= f.seq
), appended AS (
    INSERT INTO document_updates (notebook_id, seq, data)
    SELECT notebook_id, seq, data FROM incoming
    WHERE notebook_id NOT IN (SELECT notebook_id FROM refused)
    RETURNING notebook_id, seq
)
SELECT notebook_id, true AS refused, NULL::text AS notified FROM refused
UNION ALL
SELECT notebook_id, false, {notified} FROM appended GROUP BY notebook_id
"""
_ROWS = "SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bytea[]) AS u (notebook_id, seq, data)"
# A round of one update (most of them, one per keystroke) sends it as three plain values:
# encoding three one-element arrays cost ~15 us of the server's CPU a round, and PostgreSQL
# an unnest.
_ONE_ROW = "SELECT $1::uuid AS notebook_id, $2::bigint AS seq, $3::bytea AS data"
_NOTIFIED = """pg_notify($4, notebook_id::text || ':' || max(seq) || ':'
    || (extract(epoch FROM clock_timestamp()) * 1000)::bigint || ':' || $5)::text"""
# (one row, announced) -> the statement.
_APPEND = {
    (one, announced): _APPEND_TEMPLATE.format(
        incoming=_ONE_ROW if one else _ROWS, notified=_NOTIFIED if announced else "NULL::text"
    )
    for one in (False, True)
    for announced in (False, True)
}


# Compaction's two writes (see DocumentStore.compact): the new snapshot as a draft, then the
# snapshot row moved to it, if it is still the snapshot that was folded and the draft still
# the one this compaction wrote (two servers compacting at once: one wins, or neither).
_DRAFT = """
INSERT INTO document_snapshot_drafts (notebook_id, seq, data) VALUES ($1, $2, $3)
ON CONFLICT (notebook_id) DO UPDATE SET seq = excluded.seq, data = excluded.data
"""
_MOVE = """
UPDATE document_snapshots s SET seq = d.seq, data = d.data, created_at = now()
FROM document_snapshot_drafts d
WHERE s.notebook_id = $1 AND s.seq = $3 AND d.notebook_id = $1 AND d.seq = $2
RETURNING s.seq
"""


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """What loading a document reads: apply ``updates`` in order."""

    updates: list[bytes]
    last_seq: int
    # Updates logged after the snapshot: compaction is due when this grows past a threshold.
    tail_length: int


@dataclass(frozen=True, slots=True)
class Compaction:
    """A snapshot written by ``DocumentStore.compact``."""

    seq: int
    size: int
    folded: int  # log rows it replaced


def contiguous(rows: Sequence[asyncpg.Record], after: int) -> list[asyncpg.Record]:
    """The rows (ordered by seq) that follow ``after`` without a gap."""
    for n, row in enumerate(rows):
        if row["seq"] != after + n + 1:
            return list(rows[:n])
    return list(rows)


class DocumentStore:
    """Appends, loads and compacts documents in PostgreSQL.

    >>> store = DocumentStore(pool)
    >>> refused = await store.append([(notebook_id, 1, update)])
    >>> doc = await store.load(notebook_id)
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        # Names this process's appends in their notifications: the feed skips its own.
        self.node = uuid.uuid4().hex[:12]

    async def load(self, notebook_id: uuid.UUID) -> StoredDocument:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            snapshot = await conn.fetchrow(
                "SELECT seq, data FROM document_snapshots WHERE notebook_id = $1", notebook_id
            )
            since = snapshot["seq"] if snapshot else 0
            rows = await conn.fetch(
                "SELECT seq, data FROM document_updates"
                " WHERE notebook_id = $1 AND seq > $2 ORDER BY seq",
                notebook_id,
                since,
            )
        # Up to the first gap (an append in flight): the feed fetches the rest in order.
        rows = contiguous(rows, since)
        updates = [bytes(snapshot["data"])] if snapshot else []
        updates += [bytes(r["data"]) for r in rows]
        last_seq = rows[-1]["seq"] if rows else since
        return StoredDocument(updates=updates, last_seq=last_seq, tail_length=len(rows))

    async def connection(self) -> asyncpg.pool.PoolConnectionProxy:
        """A connection of the pool to keep (the group-commit writer's): taking one per
        round costs a second round trip, the reset the pool runs when it gets it back."""
        return await self._pool.acquire()

    async def give_back(self, conn: asyncpg.pool.PoolConnectionProxy) -> None:
        await self._pool.release(conn)

    async def append(
        self,
        rows: Sequence[tuple[uuid.UUID, int, bytes]],
        conn: asyncpg.pool.PoolConnectionProxy | None = None,
        *,
        announce: bool = True,
    ) -> set[uuid.UUID]:
        """Append many notebooks' updates in one statement (one round trip, one commit),
        on ``conn`` if given, else on a connection of the pool; with ``announce``, notify
        the other servers (collab.sync.replication) of each notebook's new head.

        Returns the notebooks whose updates were all refused, because one of their seqs is
        not above the notebook's snapshot: their log was compacted past the seqs they were
        given (renumber them after ``last_seq``). A seq another server holds raises
        UniqueViolationError and appends nothing; a deleted notebook, ForeignKeyViolationError.
        """
        if not rows:
            return set()
        one = len(rows) == 1
        if one:
            columns: tuple[Any, ...] = rows[0]
        else:
            ids, seqs, data = zip(*rows, strict=True)
            columns = (list(ids), list(seqs), list(data))
        # The notification (notebook id and last seq, never the update: payloads are small)
        # reaches every server that has the notebook loaded (collab.sync.replication).
        announcement = (NOTIFY_CHANNEL, self.node) if announce else ()
        db = self._pool if conn is None else conn
        records = await db.fetch(_APPEND[one, announce], *columns, *announcement)
        return {r["notebook_id"] for r in records if r["refused"]}

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
        """The last seq of each notebook, logged or compacted (one query, for catching missed
        notices: a compaction can leave no rows behind)."""
        records = await self._pool.fetch(
            "SELECT notebook_id, greatest(seq, (SELECT max(u.seq) FROM document_updates u"
            " WHERE u.notebook_id = s.notebook_id)) AS seq"
            " FROM document_snapshots s WHERE notebook_id = ANY($1::uuid[])",
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

    async def compact(
        self,
        notebook_id: uuid.UUID,
        upto: int,
        fold_with: Callable[[list[bytes]], Awaitable[bytes]] | None = None,
    ) -> Compaction | None:
        """Fold the logged updates after the snapshot, up to ``upto`` and the first gap, into
        a new snapshot, and delete them. Returns the snapshot as it now stands (``folded``
        0 if there was nothing to fold or another server compacted meanwhile), or None if
        the notebook has no snapshot row. Raises what the fold raises on unreadable data.

        ``fold_with`` folds elsewhere (a server passes its document worker's, so the fold
        never holds its event loop); without it the fold runs here.

        The rows folded cannot change between reading and writing: their seqs are taken,
        nothing can be appended at or below the snapshot, and the write checks that the
        snapshot is still the one folded.
        """
        async with self._pool.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                snapshot = await conn.fetchrow(
                    "SELECT seq, data FROM document_snapshots WHERE notebook_id = $1",
                    notebook_id,
                )
                if snapshot is None:
                    return None
                if snapshot["seq"] >= upto:
                    return Compaction(seq=snapshot["seq"], size=0, folded=0)
                rows = await conn.fetch(
                    "SELECT seq, data FROM document_updates"
                    " WHERE notebook_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
                    notebook_id,
                    snapshot["seq"],
                    upto,
                )
            rows = contiguous(rows, snapshot["seq"])
            if not rows:
                return Compaction(seq=snapshot["seq"], size=0, folded=0)
            seq = rows[-1]["seq"]
            stored = [bytes(snapshot["data"]), *(bytes(r["data"]) for r in rows)]
            data = await fold_with(stored) if fold_with is not None else fold(stored)
            # Written first, on its own: PostgreSQL compresses and writes a large snapshot
            # for ~0.1 s (4 MB), and every append of this notebook waits for its snapshot
            # row while that row is locked (and so does every notebook's update in the
            # same round). The row is then held only to take the draft as written (already
            # compressed: not compressed again) and delete the folded rows.
            try:
                await conn.execute(_DRAFT, notebook_id, seq, data)
            except asyncpg.ForeignKeyViolationError:
                return None  # the notebook is gone
            try:
                async with conn.transaction():
                    moved = await conn.fetchval(_MOVE, notebook_id, seq, snapshot["seq"])
                    if moved is None:  # another server compacted meanwhile
                        current = await conn.fetchval(
                            "SELECT seq FROM document_snapshots WHERE notebook_id = $1",
                            notebook_id,
                        )
                        return None if current is None else Compaction(current, size=0, folded=0)
                    await conn.execute(
                        "DELETE FROM document_updates WHERE notebook_id = $1 AND seq <= $2",
                        notebook_id,
                        seq,
                    )
            finally:
                # Not in the transaction: a notebook's deletion locks its drafts too, in an
                # order of its own. A draft left by a failure here is overwritten next time.
                with contextlib.suppress(*DATABASE_ERRORS):
                    await conn.execute(
                        "DELETE FROM document_snapshot_drafts WHERE notebook_id = $1 AND seq = $2",
                        notebook_id,
                        seq,
                    )
        return Compaction(seq=seq, size=len(data), folded=len(rows))
