"""The rooms service: loads a notebook's room on first use, keeps it while anyone uses it,
unloads it a grace period after the last user leaves, and compacts its update log."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Self

import anyio

from collab.background import BackgroundService
from collab.errors import NotFound, Unavailable, is_failure
from collab.metrics import Metrics
from collab.settings import Settings
from collab.storage.catalog import Catalog
from collab.storage.database import DATABASE_ERRORS
from collab.storage.document_store import DocumentStore
from collab.sync.document_worker import DocumentWorker
from collab.sync.hooks import RoomHookList
from collab.sync.other_nodes import OtherNodes
from collab.sync.room import DocumentLimits, Room
from collab.sync.writer import UpdateWriter

log = logging.getLogger(__name__)


class RoomManager(BackgroundService):
    """Owns every loaded room, the group-commit writer, and their background tasks.

    >>> async with RoomManager(settings, store, catalog) as rooms:
    ...     async with rooms.use(notebook_id) as room:
    ...         ...
    """

    name = "rooms"

    def __init__(
        self,
        settings: Settings,
        store: DocumentStore,
        catalog: Catalog,
        metrics: Metrics,
        others: OtherNodes | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._catalog = catalog
        self._rooms: dict[uuid.UUID, Room] = {}
        self._loading: dict[uuid.UUID, anyio.Lock] = {}
        self._release_tokens: dict[uuid.UUID, int] = {}
        self._compacting: set[uuid.UUID] = set()
        self.writer = UpdateWriter(store, hooks=self, metrics=metrics, others=others)
        # Told as rooms load, persist and unload (the document feed, the search indexer).
        self.hooks = RoomHookList()
        # Where connections check large updates and compaction folds, off the event loop.
        self.doc_worker = DocumentWorker(timeout=settings.update_check_seconds)

    async def __aenter__(self) -> Self:
        # The writer outlives this service's tasks (they wait for it): it starts first.
        await self.writer.__aenter__()
        try:
            return await super().__aenter__()
        except BaseException:
            await self.writer.__aexit__(None, None, None)
            raise

    async def start(self) -> None:
        self.task(self.doc_worker.start)

    async def stopped(self) -> None:
        await self.writer.__aexit__(None, None, None)
        with anyio.move_on_after(10, shield=True):
            for room in list(self._rooms.values()):
                await self._compact(room)
        await self.doc_worker.aclose()  # after the compactions, which fold in it
        self._rooms.clear()

    def loaded(self, notebook_id: uuid.UUID) -> Room | None:
        return self._rooms.get(notebook_id)

    def all(self) -> list[Room]:
        return list(self._rooms.values())

    @property
    def count(self) -> int:
        return len(self._rooms)

    @contextlib.asynccontextmanager
    async def use(self, notebook_id: uuid.UUID) -> AsyncIterator[Room]:
        room = await self.acquire(notebook_id)
        try:
            yield room
        finally:
            self.release(room)

    async def acquire(self, notebook_id: uuid.UUID) -> Room:
        """The notebook's room, loaded if needed. Raises NotFound or Unavailable."""
        room = self._rooms.get(notebook_id)
        while room is not None and room.broken:
            # Being rebuilt (see _rebuild): wait for the log to hold what it accepted.
            await anyio.sleep(0.02)
            room = self._rooms.get(notebook_id)
        if room is None:
            lock = self._loading.setdefault(notebook_id, anyio.Lock())
            async with lock:
                room = self._rooms.get(notebook_id)
                if room is None:
                    room = await self._load(notebook_id)
                    self._rooms[notebook_id] = room
            self._loading.pop(notebook_id, None)
        room.users += 1
        self._release_tokens[notebook_id] = self._release_tokens.get(notebook_id, 0) + 1
        return room

    def release(self, room: Room) -> None:
        room.users -= 1
        if room.users:
            return
        if self._rooms.get(room.notebook_id) is room:
            token = self._release_tokens.get(room.notebook_id, 0) + 1
            self._release_tokens[room.notebook_id] = token
            self.task(self._unload_later, room, token)
        else:
            room.retire()  # forgotten while in use (deleted, or rebuilt): its last user left

    def _forget(self, room: Room) -> None:
        """After the room left ``_rooms``: tell the hooks, and free it unless still in use
        (then its last release does)."""
        self.hooks.room_unloaded(room.notebook_id)
        if not room.users:
            room.retire()

    def evict(self, notebook_id: uuid.UUID, reason: str) -> None:
        """The notebook was deleted: close its clients and forget its room."""
        room = self._rooms.pop(notebook_id, None)
        if room is not None:
            room.drop_unpersisted(reason)
            self._forget(room)

    async def _load(self, notebook_id: uuid.UUID) -> Room:
        extra = {"notebook_id": str(notebook_id)}
        try:
            if not await self._catalog.notebook_exists(notebook_id):
                raise NotFound(f"no notebook {notebook_id}")
            stored = await self._store.load(notebook_id)
        except DATABASE_ERRORS as exc:
            log.error("loading document failed", extra={**extra, "error": str(exc)})
            raise Unavailable("notebook unavailable: storage did not answer; retry later") from exc
        try:
            room = Room(
                notebook_id,
                stored.updates,
                stored.last_seq,
                self.writer,
                stored.tail_length,
                DocumentLimits(self._settings.max_document_bytes, self._settings.max_cells),
                events=self,
            )
        except BaseException as exc:
            if not is_failure(exc):
                raise
            # Never serve (and later store) an empty or partial document over the real one.
            log.error("stored document is unreadable", extra={**extra, "error": repr(exc)})
            raise Unavailable(
                "notebook unavailable: its stored document could not be read"
            ) from None
        log.info(
            "room loaded",
            extra={**extra, "seq": stored.last_seq, "tail": stored.tail_length},
        )
        self._maybe_compact(room)
        self.hooks.room_loaded(room)
        return room

    async def _unload_later(self, room: Room, token: int) -> None:
        await anyio.sleep(self._settings.room_grace_seconds)
        if room.users or self._release_tokens.get(room.notebook_id) != token:
            return
        while not room.is_durable:
            await self.writer.flushed()
        if room.users or self._rooms.get(room.notebook_id) is not room:
            return
        await self._compact(room)
        if room.users == 0 and self._rooms.get(room.notebook_id) is room:
            del self._rooms[room.notebook_id]
            self._release_tokens.pop(room.notebook_id, None)
            log.info("room unloaded", extra={"notebook_id": str(room.notebook_id)})
            self._forget(room)

    # -- the rooms' events (RoomEvents) ---------------------------------------------------

    def room_broken(self, room: Room) -> None:
        self.task(self._rebuild, room)

    def presence_changed(self, room: Room, payload: bytes) -> None:
        self.hooks.presence_changed(room, payload)

    async def _rebuild(self, room: Room) -> None:
        """Forget a broken room once what it accepted is in the log; the next use loads the
        document afresh from the log (which never held the update that broke it)."""
        try:
            with anyio.move_on_after(30):
                while not room.is_durable:
                    await self.writer.flushed()
        finally:
            if self._rooms.get(room.notebook_id) is room:
                del self._rooms[room.notebook_id]
                self._forget(room)
            log.warning("room rebuilt from the log", extra={"notebook_id": str(room.notebook_id)})

    # -- the writer's hooks (PersistHooks) ---------------------------------------------

    def update_persisted(self, room: Room) -> None:
        self._maybe_compact(room)
        self.hooks.update_persisted(room)

    def notebook_gone(self, notebook_id: uuid.UUID) -> None:
        room = self._rooms.pop(notebook_id, None)
        if room is not None:
            self._forget(room)

    def _maybe_compact(self, room: Room) -> None:
        if (
            room.tail_length >= self._settings.compact_after_updates
            and room.notebook_id not in self._compacting
            and self.started
        ):
            # The newest updates stay in the log: another server that is a few updates
            # behind (notices take a few milliseconds) catches up from the log, not from the
            # whole snapshot.
            keep = self._settings.compact_after_updates // 10
            self.task(self._compact, room, keep)

    async def _compact(self, room: Room, keep: int = 0) -> None:
        if room.tail_length == 0 or room.notebook_id in self._compacting:
            return
        self._compacting.add(room.notebook_id)
        extra = {"notebook_id": str(room.notebook_id)}
        started = time.perf_counter()
        try:
            # From the stored rows, not from room.doc: the live document may hold updates
            # accepted but not yet logged, and a snapshot at seq S must hold exactly the
            # updates logged up to S (see store.py). At most up to synced_seq: this room has
            # applied all of those, so it never needs the snapshot it writes.
            upto = room.synced_seq - keep
            compaction = await self._store.compact(
                room.notebook_id, upto=upto, fold_with=self.doc_worker.fold
            )
            if compaction is None:  # no snapshot row to fold into: the notebook is gone
                room.forget_tail()
                return
            # Also when another server compacted first: do not try again at every append.
            room.compacted(compaction.seq)
            if not compaction.folded:
                return
            log.info(
                "document compacted",
                extra={
                    **extra,
                    "seq": compaction.seq,
                    "bytes": compaction.size,
                    "updates": compaction.folded,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
        except DATABASE_ERRORS as exc:
            log.warning(
                "compaction failed; the log stays as it is", extra={**extra, "error": str(exc)}
            )
        except BaseException as exc:
            if not is_failure(exc):
                raise
            # Unreadable stored data, a fold past its time, or a worker that died on it
            # (collab.sync.document_worker): this server goes on either way.
            log.error(
                "compaction failed: the stored document could not be folded; the log stays",
                extra={**extra, "error": repr(exc)},
            )
            room.forget_tail()  # not again at every append
        finally:
            self._compacting.discard(room.notebook_id)
