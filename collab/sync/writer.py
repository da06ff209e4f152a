"""Group commit: the appends of every room, gathered while the previous round was being
written, go to PostgreSQL in one statement; each room broadcasts its share once it is in.

Under light load a round holds one update and costs one round trip; under heavy load the
rounds grow instead of queueing, so throughput holds and latency stays bounded.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Protocol

import anyio
import asyncpg

from collab.background import BackgroundService
from collab.metrics import Metrics
from collab.storage.database import DATABASE_ERRORS
from collab.storage.document_store import DocumentStore
from collab.sync.other_nodes import OtherNodes
from collab.sync.room import Batch, Room

log = logging.getLogger(__name__)

_RETRY_FIRST = 0.05
_RETRY_MAX = 5.0


class PersistHooks(Protocol):
    """What the writer tells the owner of the rooms (``RoomManager``) after a round."""

    def update_persisted(self, room: Room) -> None:
        """The room's batch is in the log and the room has broadcast it."""

    def notebook_gone(self, notebook_id: uuid.UUID) -> None:
        """The notebook was deleted while loaded; its unwritten updates were dropped."""


class UpdateWriter(BackgroundService):
    """Owns the append loop. Rooms call ``schedule(room)`` whenever they accept updates.

    >>> async with UpdateWriter(store, hooks=rooms) as writer:
    ...     room = Room(notebook_id, updates, last_seq, writer)
    """

    name = "update-writer"

    def __init__(
        self,
        store: DocumentStore,
        hooks: PersistHooks,
        metrics: Metrics | None = None,
        others: OtherNodes | None = None,
    ) -> None:
        self._metrics = metrics
        # Without them (a writer of its own, in tests) every append notifies.
        self._others = others
        self._store = store
        self._hooks = hooks
        self._dirty: dict[uuid.UUID, Room] = {}
        # Events are made only when they will be waited on: making an anyio Event costs
        # several microseconds, and a round is made for nearly every keystroke.
        self._wake = anyio.Event()
        self._busy = False
        self._round_done: anyio.Event | None = None  # made by flushed()
        self._conn: asyncpg.pool.PoolConnectionProxy | None = None  # kept between rounds

    async def start(self) -> None:
        self.loop(self._run)

    async def stopping(self) -> None:
        # Write what is pending before stopping: a clean shutdown loses nothing.
        with anyio.move_on_after(10):
            await self.flushed()

    async def stopped(self) -> None:
        await self._drop_connection()

    async def _append(self, rows: list[tuple[uuid.UUID, int, bytes]]) -> set[uuid.UUID]:
        if self._conn is None:
            self._conn = await self._store.connection()
        try:
            announce = self._others is None or self._others.may_exist
            return await self._store.append(rows, self._conn, announce=announce)
        except BaseException:
            if self._conn.is_closed():
                await self._drop_connection()  # the next round takes a fresh one
            raise

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self._store.give_back(conn)

    def schedule(self, room: Room) -> None:
        self._dirty[room.notebook_id] = room
        self._wake.set()

    async def flushed(self) -> None:
        """Wait until everything scheduled so far has been written (or dropped as gone)."""
        while self._dirty or self._busy:
            if self._round_done is None:
                self._round_done = anyio.Event()
            await self._round_done.wait()

    async def _run(self) -> None:
        while True:
            # No wait (not even a checkpoint) when updates came in during the last round:
            # its broadcasts are queued for the loop's next turn, and this round's INSERT
            # goes out first, so PostgreSQL works while the frames are written.
            if not self._dirty:
                if self._wake.is_set():  # by schedule() for rooms a round has taken since
                    self._wake = anyio.Event()
                await self._wake.wait()
                continue
            self._busy = True
            # A method of its own, so that no room stays referenced from this loop while it
            # waits for the next round (an unloaded room must be free to go).
            await self._round()
            self._busy = False
            done, self._round_done = self._round_done, None
            if done is not None:
                done.set()

    async def _round(self) -> None:
        rooms = list(self._dirty.values())
        self._dirty.clear()
        batches = [(room, room.take_batch()) for room in rooms]
        started = time.perf_counter()
        written = await self._write(batches)
        if self._metrics is not None:
            count = sum(len(batch.entries) for _, batch in batches)
            self._metrics.persist_seconds.observe(time.perf_counter() - started)
            self._metrics.persist_batch.observe(count)
            self._metrics.updates.inc(count)
        for room, batch in written:
            room.persisted(batch)
            self._hooks.update_persisted(room)

    async def _write(self, batches: list[tuple[Room, Batch]]) -> list[tuple[Room, Batch]]:
        """Append all batches in one statement; returns those now durable."""
        delay = _RETRY_FIRST
        while True:
            try:
                refused = await self._append([row for _, b in batches for row in _rows(b)])
            except (asyncpg.ForeignKeyViolationError, asyncpg.UniqueViolationError):
                # A notebook was deleted while clients were editing it, or another server
                # appended to the same log: write room by room to find which.
                return [pair for pair in batches if await self._write_one(*pair)]
            except DATABASE_ERRORS as exc:
                log.warning(
                    "appending updates failed; retrying",
                    extra={"rooms": len(batches), "error": str(exc), "retry_in_s": delay},
                )
            else:
                if not refused:
                    return batches
                # Another server compacted these logs past the seqs we gave: the rest of the
                # round is in; append these after the log's head.
                written = []
                for room, batch in batches:
                    if room.notebook_id not in refused or await self._write_one(
                        room, batch, renumber=True
                    ):
                        written.append((room, batch))
                return written
            await anyio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def _write_one(self, room: Room, batch: Batch, renumber: bool = False) -> bool:
        delay = _RETRY_FIRST
        while True:
            try:
                if renumber:
                    await self._renumber(room, batch)
                    renumber = False
                if not await self._append(_rows(batch)):
                    return True
                renumber = True  # refused: the log was compacted past these seqs
                continue
            except asyncpg.ForeignKeyViolationError:
                log.info(
                    "notebook deleted while loaded", extra={"notebook_id": str(room.notebook_id)}
                )
                room.drop_unpersisted("notebook deleted")
                self._hooks.notebook_gone(room.notebook_id)
                return False
            except asyncpg.UniqueViolationError:
                # Another server holds this notebook too and took these seqs: append after it.
                renumber = True
                continue
            except DATABASE_ERRORS as exc:
                log.warning(
                    "appending updates failed; retrying",
                    extra={"notebook_id": str(room.notebook_id), "error": str(exc)},
                )
            await anyio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def _renumber(self, room: Room, batch: Batch) -> None:
        last = await self._store.last_seq(room.notebook_id)
        room.renumber(batch, last)
        if self._metrics is not None:
            self._metrics.renumbered.inc()
        # Expected whenever two servers write one notebook at once: not worth a warning.
        log.debug(
            "update log appended by another server; renumbered",
            extra={"notebook_id": str(room.notebook_id), "after_seq": last},
        )


def _rows(batch: Batch) -> list[tuple[uuid.UUID, int, bytes]]:
    return [(batch.notebook_id, seq, update) for _origin, update, seq in batch.entries]
