"""The document feed: keeps this server's rooms current with what other servers append.

Every append notifies (LISTEN/NOTIFY) with the notebook id and the last seq, never the
update itself. A server with that notebook loaded fetches the rows after its ``synced_seq``
and applies them in order. A notice can be missed (the listening connection drops, a server
restarts): a poll every few seconds compares each loaded room with the log's head and fills
any gap the same way. Servers also tell each other they are there (collab.sync.other_nodes):
a server that knows it is alone sends no notices at all.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import time
import uuid
from typing import Any

import anyio
import asyncpg

from collab.background import BackgroundService
from collab.errors import ProtocolError
from collab.metrics import Metrics
from collab.storage.database import DATABASE_ERRORS
from collab.storage.document_store import NOTIFY_CHANNEL, DocumentStore
from collab.sync.hooks import RoomHooks
from collab.sync.other_nodes import NODES_CHANNEL, OtherNodes
from collab.sync.room import Room
from collab.sync.room_manager import RoomManager

AWARENESS_CHANNEL = "weft_awareness"
# NOTIFY payloads are limited to 8000 bytes; presence larger than this stays on its server.
_MAX_AWARENESS_PAYLOAD = 7000

log = logging.getLogger(__name__)


class Replication(BackgroundService, RoomHooks):
    """
    >>> async with Replication(pool, store, rooms, poll_seconds=2.0):
    ...     ...
    """

    name = "replication"

    def __init__(
        self,
        pool: asyncpg.Pool,
        store: DocumentStore,
        rooms: RoomManager,
        metrics: Metrics,
        poll_seconds: float,
        others: OtherNodes | None = None,
    ) -> None:
        self._metrics = metrics
        self.others = others if others is not None else OtherNodes(interval_s=poll_seconds)
        # When each notice we acted on was sent (ms since the epoch), by notebook.
        self._sent_at: dict[uuid.UUID, float] = {}
        self._node = store.node
        self._outgoing: list[str] = []
        self._send_wake = anyio.Event()
        self._pool = pool
        self._store = store
        self._rooms = rooms
        self._poll_seconds = poll_seconds
        self._due: set[uuid.UUID] = set()
        self._wake = anyio.Event()
        self._listener: Any = None
        self._listener_lost = anyio.Event()

    async def start(self) -> None:
        self.loop(self._listen_loop)
        self.loop(self._catch_up_loop)
        self.loop(self._publish_loop)
        self.loop(self._here_loop)
        self._rooms.hooks.add(self, loaded=self._rooms.all())

    async def stopping(self) -> None:
        self._rooms.hooks.remove(self)
        # So that the others stop announcing to us at once (a crash: within 3 intervals).
        with anyio.move_on_after(2), contextlib.suppress(*DATABASE_ERRORS):
            await self._say("bye")

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        notebook, seq, sent_ms, node = [*payload.split(":", 3), "", "", ""][:4]
        if node == self._node:
            return  # our own append: already in the room (no catch-up query needed)
        try:
            notebook_id, head = uuid.UUID(notebook), int(seq)
        except ValueError:
            return
        room = self._rooms.loaded(notebook_id)
        if room is not None and head > room.synced_seq:
            if sent_ms.isdigit():
                self._sent_at.setdefault(notebook_id, int(sent_ms) / 1000)
            self._due.add(notebook_id)
            self._wake.set()

    # -- the room hooks ------------------------------------------------------------------

    def presence_changed(self, room: Room, payload: bytes) -> None:
        """Send the room's presence to the other servers, if there may be any."""
        if not self.others.may_exist:
            return
        text = f"{room.notebook_id}:{self._node}:{base64.b64encode(payload).decode()}"
        if len(text) <= _MAX_AWARENESS_PAYLOAD:
            self._outgoing.append(text)
            self._send_wake.set()

    def room_unloaded(self, notebook_id: uuid.UUID) -> None:
        self._sent_at.pop(notebook_id, None)

    # -- presence across servers -------------------------------------------------------

    async def _publish_loop(self) -> None:
        while True:
            await self._send_wake.wait()
            self._send_wake = anyio.Event()
            outgoing, self._outgoing = self._outgoing, []
            try:
                await self._pool.execute(
                    "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
                    AWARENESS_CHANNEL,
                    outgoing,
                )
            except DATABASE_ERRORS as exc:
                log.warning("presence could not be sent to other servers: %s", exc)

    def _presence(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        notebook, node, data = [*payload.split(":", 2), "", ""][:3]
        if node == self._node:
            return
        try:
            room = self._rooms.loaded(uuid.UUID(notebook))
            if room is not None:
                room.apply_remote_awareness(base64.b64decode(data))
        except (ValueError, ProtocolError) as exc:
            log.warning("ignored malformed presence from another server: %s", exc)

    def _lost(self, _conn: Any) -> None:
        self._listener_lost.set()

    # -- the other servers -------------------------------------------------------------

    async def _say(self, word: str) -> None:
        await self._pool.execute("SELECT pg_notify($1, $2)", NODES_CHANNEL, f"{word}:{self._node}")

    def _node_said(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        word, _, node = payload.partition(":")
        if node == self._node or not node:
            return
        if word == "bye":
            self.others.left(node)
        else:
            self.others.heard(node)

    async def _here_loop(self) -> None:
        while True:
            await anyio.sleep(self._poll_seconds)
            try:
                await self._say("here")
            except DATABASE_ERRORS as exc:
                log.warning("could not tell the other servers this one is here: %s", exc)

    async def _listen_loop(self) -> None:
        """Hold a LISTEN connection; when it drops, reconnect and check every room."""
        while True:
            try:
                async with self._pool.acquire() as conn:
                    self._listener_lost = anyio.Event()
                    await conn.add_listener(NOTIFY_CHANNEL, self._notified)
                    await conn.add_listener(AWARENESS_CHANNEL, self._presence)
                    await conn.add_listener(NODES_CHANNEL, self._node_said)
                    conn.add_termination_listener(self._lost)
                    try:
                        # Heard by the others at once; theirs reach us within an interval.
                        await self._say("here")
                        self.others.listening()
                        # Whatever was appended while we were not listening.
                        self._due.update(room.notebook_id for room in self._rooms.all())
                        self._wake.set()
                        await self._listener_lost.wait()
                        log.warning("document feed lost its LISTEN connection; reconnecting")
                    finally:
                        self.others.deaf()
                        conn.remove_termination_listener(self._lost)
                        with (
                            anyio.CancelScope(shield=True),
                            contextlib.suppress(*DATABASE_ERRORS),
                        ):
                            await conn.remove_listener(NOTIFY_CHANNEL, self._notified)
                            await conn.remove_listener(AWARENESS_CHANNEL, self._presence)
                            await conn.remove_listener(NODES_CHANNEL, self._node_said)
            except DATABASE_ERRORS as exc:
                log.warning("document feed cannot listen: %s", exc)
            await anyio.sleep(0.5)

    async def _catch_up_loop(self) -> None:
        while True:
            with anyio.move_on_after(self._poll_seconds) as scope:
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                if scope.cancelled_caught:
                    await self._find_gaps()
                due, self._due = self._due, set()
                for notebook_id in due:
                    await self.catch_up(notebook_id)
            except DATABASE_ERRORS as exc:
                log.warning("document feed could not catch up: %s", exc)

    async def _find_gaps(self) -> None:
        rooms = self._rooms.all()
        if not rooms:
            return
        heads = await self._store.heads([room.notebook_id for room in rooms])
        for room in rooms:
            if heads.get(room.notebook_id, 0) > room.synced_seq:
                self._due.add(room.notebook_id)

    async def catch_up(self, notebook_id: uuid.UUID) -> None:
        """Apply what other servers appended to the notebook's log and this server's room
        lacks (also called before a server-side write that must follow them: the
        executor's run states, which would otherwise race the server that queued them)."""
        room = self._rooms.loaded(notebook_id)
        if room is None:
            return
        since = room.synced_seq
        snapshot, rows = await self._store.updates_after(notebook_id, since)
        if room is not self._rooms.loaded(notebook_id):
            return
        if snapshot is not None:
            room.apply_snapshot(*snapshot)
        complete = room.apply_logged(rows)
        sent_at = self._sent_at.pop(notebook_id, None)
        if room.synced_seq > since:
            self._rooms.hooks.log_applied(room)
            if sent_at is not None:
                self._metrics.notify_lag_seconds.observe(max(time.time() - sent_at, 0))
            log.debug(
                "applied updates from the log",
                extra={
                    "notebook_id": str(notebook_id),
                    "from_seq": since,
                    "to_seq": room.synced_seq,
                },
            )
        if not complete:
            # An append is still in flight on another server: look again shortly.
            self._due.add(notebook_id)
