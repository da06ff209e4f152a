"""Keeping the search index (collab.search.query) current as documents change.

- every change of a loaded room's document marks the notebook due (the room hooks: a round
  of its updates made durable here, or other servers' updates applied to it; observing the
  document instead would run Python for every transaction, reads and keystrokes included),
  and its text is written at most ``delay`` seconds later (one statement for every due
  notebook). The indexer holds the room until then, so a room that unloads in between is
  still flushed;
- notebooks with no text indexed yet (new, imported, or there before this migration) are
  indexed from the store within ``poll_seconds``;
- a sweep every ``sweep_seconds`` re-indexes, from the store, any notebook whose document
  has moved past what its row reflects (a server that died before flushing);
- each workspace's lexicon of typo candidates follows within ``poll_seconds``
  (``update_lexicon``);
- ``reindex_all`` rebuilds everything on demand.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg
from pycrdt import Doc

if TYPE_CHECKING:
    from collab.storage.document_store import DocumentStore
    from collab.sync.room import Room
    from collab.sync.room_manager import RoomManager

from collab.background import BackgroundService
from collab.document.cell_list import CellList
from collab.document.cell_text import document_cells
from collab.errors import is_failure
from collab.search.query import SEPARATOR
from collab.storage.database import DATABASE_ERRORS
from collab.sync.document_worker import DocumentWorker, StoredDocumentFailed
from collab.sync.hooks import RoomHooks

log = logging.getLogger(__name__)

# At most this share of the event loop goes to reading one notebook's text: a notebook
# whose read took t seconds waits at least t / _LOOP_SHARE between reads (a 2,000-cell
# notebook with outputs reads in ~50-80 ms, so it is indexed every 1-1.6 s while it changes,
# not every second; small ones every ``delay``).
_LOOP_SHARE = 0.05

MAX_BODY_CHARS = 200_000

# Write many notebooks' text at once; rows always exist (the trigger on notebooks makes
# them). Rows another transaction holds are skipped, never waited for (so the indexer is in
# no deadlock), and returned: the caller writes them again later. The guard keeps a write
# from an older state of the document from replacing a newer one, and skips rows that
# would not change.
_WRITE_SQL = """
WITH incoming AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[])
        AS u (id, body, cell_ids, seq)
), locked AS (
    SELECT ns.notebook_id FROM notebook_search ns
    WHERE ns.notebook_id IN (SELECT id FROM incoming)
    ORDER BY ns.notebook_id
    FOR UPDATE SKIP LOCKED
), written AS (
    UPDATE notebook_search s
    SET body = i.body, cell_ids = string_to_array(i.cell_ids, E'\\x1e'),
        indexed_seq = i.seq, indexed_at = now()
    FROM incoming i
    WHERE s.notebook_id = i.id
      AND s.notebook_id IN (SELECT notebook_id FROM locked)
      AND s.indexed_seq <= i.seq
      AND (s.indexed_seq < i.seq OR s.body IS DISTINCT FROM i.body
           OR s.cell_ids IS DISTINCT FROM string_to_array(i.cell_ids, E'\\x1e'))
    RETURNING s.notebook_id
)
SELECT i.id FROM incoming i
WHERE i.id NOT IN (SELECT notebook_id FROM locked)
  AND EXISTS (SELECT 1 FROM notebook_search ns WHERE ns.notebook_id = i.id)
"""

_UNINDEXED_SQL = """
SELECT notebook_id FROM notebook_search WHERE indexed_seq < 0 ORDER BY notebook_id LIMIT $1
"""

# Rows behind their document, not written lately (a live room keeps its row fresh).
_STALE_SQL = """
SELECT ns.notebook_id FROM notebook_search ns
WHERE ns.indexed_seq >= 0
  AND (ns.indexed_at IS NULL OR ns.indexed_at < now() - make_interval(secs => $1))
  AND ns.indexed_seq < greatest(
        (SELECT max(u.seq) FROM document_updates u WHERE u.notebook_id = ns.notebook_id),
        (SELECT s.seq FROM document_snapshots s WHERE s.notebook_id = ns.notebook_id))
ORDER BY ns.indexed_at NULLS FIRST
LIMIT $2
"""

# Any constant: held (per session) by the server doing the catch-up, so one does it at once.
_CATCH_UP_LOCK = 0x5EF7_5EA2
# search_words' writer lock: the constant in search_words_update (021_search.sql).
_LEXICON_LOCK = 1475027329


# -- the index --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexEntry:
    notebook_id: uuid.UUID
    cell_ids: list[str]
    sources: list[str]
    seq: int


def _clean(text: str) -> str:
    return text.replace("\x00", "").replace(SEPARATOR, " ")


def _rows(entries: Iterable[IndexEntry]) -> tuple[list[Any], ...]:
    ids, bodies, cell_ids, seqs = [], [], [], []
    for entry in entries:
        body = SEPARATOR.join(_clean(s) for s in entry.sources)[:MAX_BODY_CHARS]
        ids.append(entry.notebook_id)
        bodies.append(body)
        cell_ids.append(SEPARATOR.join(_clean(c) for c in entry.cell_ids))
        seqs.append(entry.seq)
    return ids, bodies, cell_ids, seqs


async def write_entries(
    conn: asyncpg.Pool | asyncpg.Connection, entries: list[IndexEntry]
) -> set[uuid.UUID]:
    """Write the entries; returns the notebooks whose row was busy (write them again)."""
    if not entries:
        return set()
    return {r[0] for r in await conn.fetch(_WRITE_SQL, *_rows(entries))}


async def update_lexicon(pool: asyncpg.Pool, batch: int = 500) -> int:
    """Count the words of changed and deleted rows into search_words (typo candidates).
    Returns the rows done; 0 when another server is at it."""
    total = 0
    while True:
        done = int(await pool.fetchval("SELECT search_words_update($1)", batch))
        if done <= 0:
            return total
        total += done
        if done < batch:
            return total


def _read_cells(
    doc: Doc[Any], cells: CellList, notebook_id: uuid.UUID
) -> tuple[list[str], list[str]]:
    """document_cells, or none (logged) if the binding cannot read the document."""
    try:
        return document_cells(doc, cells)
    except BaseException as exc:
        if not is_failure(exc):
            raise
        log.warning(
            "search: document is unreadable; indexed without its cells",
            extra={"notebook_id": str(notebook_id), "error": repr(exc)},
        )
        return [], []


def room_entry(room: Room) -> IndexEntry:
    # synced_seq: the doc holds every logged update up to it (and maybe newer ones).
    cell_ids, sources = _read_cells(room.doc, room.cells, room.notebook_id)
    return IndexEntry(room.notebook_id, cell_ids, sources, room.synced_seq)


async def stored_entry(
    store: DocumentStore, notebook_id: uuid.UUID, worker: DocumentWorker
) -> IndexEntry:
    """The notebook's text as stored, read in ``worker`` (collab.sync.document_worker: a
    server's event loop must not apply a whole stored notebook). A document the binding
    cannot read, or not in the worker's time, is logged and indexed without its cells (its
    title still finds it), and tried again when it changes."""
    stored = await store.load(notebook_id)
    try:
        cell_ids, sources = await worker.read_cells(stored.updates)
    except StoredDocumentFailed as exc:
        log.warning(
            "search: stored document is unreadable; indexed without its cells",
            extra={"notebook_id": str(notebook_id), "error": str(exc)},
        )
        cell_ids, sources = [], []
    return IndexEntry(notebook_id, cell_ids, sources, stored.last_seq)


async def _entries(
    store: DocumentStore, rooms: RoomManager, ids: Iterable[uuid.UUID]
) -> list[IndexEntry]:
    """Entries from the loaded room where there is one, else from the store (read in the
    rooms' document worker)."""
    entries = []
    for notebook_id in ids:
        room = rooms.loaded(notebook_id)
        entries.append(
            room_entry(room)
            if room is not None
            else await stored_entry(store, notebook_id, rooms.doc_worker)
        )
    return entries


async def reindex_all(
    pool: asyncpg.Pool,
    store: DocumentStore,
    rooms: RoomManager,
    batch: int = 200,
) -> int:
    """Rebuild the whole index: a row for every notebook, its text from the live room (if
    loaded here) or the store, every tsvector, and the lexicon. Returns the notebooks done."""
    await pool.execute(
        "INSERT INTO notebook_search (notebook_id, workspace_id, title)"
        " SELECT id, workspace_id, title FROM notebooks ON CONFLICT (notebook_id) DO UPDATE"
        " SET workspace_id = EXCLUDED.workspace_id, title = EXCLUDED.title"
    )
    done = 0
    after = uuid.UUID(int=0)
    while True:
        ids = [
            r["id"]
            for r in await pool.fetch(
                "SELECT id FROM notebooks WHERE id > $1 ORDER BY id LIMIT $2", after, batch
            )
        ]
        if not ids:
            break
        after = ids[-1]
        entries = await _entries(store, rooms, ids)
        for _ in range(50):
            busy = await write_entries(pool, entries)
            if not busy:
                break
            entries = [e for e in entries if e.notebook_id in busy]
            await anyio.sleep(0.1)
        done += len(ids)
    async with pool.acquire() as conn, conn.transaction():
        # The lexicon's writer lock, then no other writer of rows until this commits.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LEXICON_LOCK)
        await conn.execute("LOCK TABLE notebook_search IN SHARE ROW EXCLUSIVE MODE")
        await conn.execute(
            "UPDATE notebook_search SET tsv = search_document(title, body),"
            " title_tsv = to_tsvector('simple', search_normalize(title))"
            " WHERE tsv IS DISTINCT FROM search_document(title, body)"
            " OR title_tsv IS DISTINCT FROM to_tsvector('simple', search_normalize(title))"
        )
        await conn.execute("DELETE FROM search_words")
        await conn.execute("DELETE FROM search_words_released")
        await conn.execute(
            "UPDATE notebook_search SET lexicon = search_lexicon(tsv),"
            " lexicon_workspace = workspace_id, lexicon_due = false"
        )
        # Each workspace's lexicon (typo candidates come only from the caller's share).
        await conn.execute(
            "INSERT INTO search_words (workspace_id, word, notebooks)"
            " SELECT workspace_id, w, count(*) FROM notebook_search, unnest(lexicon) AS w"
            " GROUP BY workspace_id, w"
        )
    log.info("search index rebuilt", extra={"notebooks": done})
    return done


class SearchIndexer(BackgroundService, RoomHooks):
    """Keeps ``notebook_search`` current while the server runs.

    >>> async with SearchIndexer(pool, store, rooms):
    ...     ...
    """

    name = "search-indexer"

    def __init__(
        self,
        pool: asyncpg.Pool,
        store: DocumentStore,
        rooms: RoomManager,
        delay: float = 1.0,
        poll_seconds: float = 1.0,
        sweep_seconds: float = 60.0,
        batch: int = 100,
    ) -> None:
        self._pool = pool
        self._store = store
        self._rooms = rooms
        self._delay = delay
        self._poll_seconds = poll_seconds
        self._sweep_seconds = sweep_seconds
        self._batch = batch
        # notebook id -> (when to write it, the room whose doc to read).
        self._due: dict[uuid.UUID, tuple[float, Room]] = {}
        # notebook id -> how long reading its loaded room took last time (seconds).
        self._read_seconds: dict[uuid.UUID, float] = {}
        self._wake = anyio.Event()

    async def start(self) -> None:
        self.loop(self._flush_loop)
        self.loop(self._poll_loop)
        self._rooms.hooks.add(self, loaded=self._rooms.all())

    async def stopping(self) -> None:
        self._rooms.hooks.remove(self)

    async def stopped(self) -> None:
        # What was typed in the last moments before a shutdown.
        with anyio.move_on_after(5, shield=True):
            due, self._due = self._due, {}
            try:
                await self._write_rooms([room for _, room in due.values()])
            except DATABASE_ERRORS as error:
                log.warning("search: final flush failed: %s", error)

    def room_loaded(self, room: Room) -> None:
        """Index the room's document now (it may have changed while it was not loaded)."""
        self.touch(room)

    def update_persisted(self, room: Room) -> None:
        self.touch(room)

    def log_applied(self, room: Room) -> None:
        self.touch(room)

    def room_unloaded(self, notebook_id: uuid.UUID) -> None:
        self._read_seconds.pop(notebook_id, None)

    def touch(self, room: Room) -> None:
        """The room's text may have changed: write it within ``delay`` seconds, or later
        for a notebook so large that reading it takes long (see ``_LOOP_SHARE``)."""
        entry = self._due.get(room.notebook_id)
        if entry is None:
            wait = max(self._delay, self._read_seconds.get(room.notebook_id, 0.0) / _LOOP_SHARE)
            self._due[room.notebook_id] = (anyio.current_time() + wait, room)
            self._wake.set()
        else:
            self._due[room.notebook_id] = (entry[0], room)

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._due:
                first = min(deadline for deadline, _ in self._due.values())
                await anyio.sleep(max(0.0, first - anyio.current_time()))
                now = anyio.current_time()
                ready = [nid for nid, (deadline, _) in self._due.items() if deadline <= now]
                rooms = [self._due.pop(nid)[1] for nid in ready]
                try:
                    await self._write_rooms(rooms)
                except DATABASE_ERRORS as exc:
                    log.warning("search: index write failed; retrying: %s", exc)
                    for room in rooms:
                        self.touch(room)
                    await anyio.sleep(self._delay)
                except Exception:
                    # Never let the index take the server down; the sweep catches up.
                    log.exception("search: index write failed")

    async def _write_rooms(self, rooms: list[Room]) -> None:
        if not rooms:
            return
        entries = []
        for room in rooms:
            started = time.perf_counter()
            entries.append(room_entry(room))
            self._read_seconds[room.notebook_id] = time.perf_counter() - started
        busy = await write_entries(self._pool, entries)
        for room in rooms:
            if room.notebook_id in busy:
                self.touch(room)

    async def _poll_loop(self) -> None:
        last_sweep = anyio.current_time()
        while True:
            await anyio.sleep(self._poll_seconds)
            try:
                sweep = anyio.current_time() - last_sweep >= self._sweep_seconds
                if sweep:
                    last_sweep = anyio.current_time()
                await self.catch_up(sweep=sweep)
                await update_lexicon(self._pool)
            except DATABASE_ERRORS as exc:
                log.warning("search: catching up the index failed: %s", exc)
            except Exception:
                log.exception("search: catching up the index failed")

    async def catch_up(self, sweep: bool = True, grace_seconds: float | None = None) -> int:
        """Index notebooks that have no text indexed yet and, with ``sweep``, every notebook
        whose document moved past its row (a server died before writing it); rows written in
        the last ``grace_seconds`` (default: sweep_seconds) belong to a live room. One server
        at a time does this; the others return 0 at once."""
        grace = self._sweep_seconds if grace_seconds is None else grace_seconds
        total = 0
        async with self._pool.acquire() as holder:
            if not await holder.fetchval("SELECT pg_try_advisory_lock($1)", _CATCH_UP_LOCK):
                return 0
            try:
                while (done := await self._index(_UNINDEXED_SQL, self._batch)) > 0:
                    total += done
                while sweep and (done := await self._index(_STALE_SQL, grace, self._batch)) > 0:
                    total += done
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        await holder.execute("SELECT pg_advisory_unlock($1)", _CATCH_UP_LOCK)
                    except DATABASE_ERRORS:
                        holder.terminate()  # the session ends, and its lock with it
        return total

    async def _index(self, sql: str, *args: Any) -> int:
        """Index, from their room here or the store, the notebooks ``sql`` selects; returns
        how many were written (busy rows are left for the next round)."""
        ids = [r[0] for r in await self._pool.fetch(sql, *args)]
        entries = await _entries(self._store, self._rooms, ids)
        busy = await write_entries(self._pool, entries)
        return len(entries) - len(busy)
