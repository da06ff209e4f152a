"""The WebSocket endpoint ``/ws/{notebook_id}``: y-protocols sync and awareness.

Each connection runs two tasks: a receiver that hands frames to the room, and a sender
that drains the client's bounded queue. Anything wrong with one connection (a malformed
frame, a y-py panic, a frame too large, a client too slow) closes that connection alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import Protocol

import anyio
import anyio.abc
from starlette.websockets import WebSocket, WebSocketDisconnect

from collab.app_services import kept_services
from collab.auth.access import Principal, Role, credential_digest, require_notebook
from collab.auth.access_watch import LiveSockets
from collab.close_codes import CloseCode
from collab.errors import (
    Forbidden,
    NotFound,
    ProtocolError,
    Unauthorized,
    Unavailable,
    is_binding_panic,
)
from collab.ids import parse_uuid
from collab.metrics import Metrics
from collab.settings import Settings
from collab.sync import protocol
from collab.sync.direct_socket import EXTENSION, DirectSocket
from collab.sync.document_worker import DocumentWorker
from collab.sync.room import (
    SERVER_AWARENESS_ID,
    DocumentFull,
    Outbox,
    Room,
)
from collab.sync.room_manager import RoomManager

log = logging.getLogger(__name__)

# How long a closing handshake may take before we drop the socket anyway.
_CLOSE_TIMEOUT = 2.0
_EMPTY_UPDATE = b"\x00\x00"


def access_notice(role: Role, refused: int) -> bytes:
    """The server's word to one connection about its access, as an awareness entry under
    the reserved client id 0 that only this connection receives (docs/api.md)."""
    notice: dict[str, object] = {"role": role.label, "readonly": role < Role.EDITOR}
    if refused:
        notice["refused_updates"] = True
        notice["message"] = "you are a viewer: your edits are not saved or shared"
    state = {"weft": notice}
    entry = protocol.AwarenessEntry(SERVER_AWARENESS_ID, 1 + min(refused, 1), json.dumps(state))
    return protocol.encode_awareness_message([entry])


class SocketServices(Protocol):
    """What the socket endpoint reads from the server's services (collab.services.Services)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def rooms(self) -> RoomManager: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def sockets(self) -> LiveSockets: ...


class Connection:
    """One client's WebSocket bound to a room; it is its outbox's ``OutboxHooks``."""

    def __init__(
        self,
        websocket: WebSocket,
        room: Room,
        client: Outbox,
        settings: Settings,
        metrics: Metrics | None = None,
        *,
        principal: Principal,
        credential_digest: bytes,
        doc_worker: DocumentWorker,
    ):
        self.metrics = metrics
        self.doc_worker = doc_worker  # the room manager's: one worker for every connection
        # While a large update is checked in the worker (collab.sync.document_worker), this
        # connection's later frames wait here, in order; reading is paused meanwhile.
        self._waiting: deque[bytes] = deque()
        self._checked: anyio.Event | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self.notebook_id = room.notebook_id
        assert principal.workspace_id is not None  # require_notebook sets it
        self.workspace_id = principal.workspace_id
        self.credential_digest = credential_digest
        assert principal.credential_id is not None
        self.credential_id = principal.credential_id
        self.role = principal.role
        self.refused_updates = 0
        self.websocket = websocket
        self.room = room
        self.client = client
        self.settings = settings
        self.disconnected = False
        self.finished = False
        self.frames_in = 0
        self._flush: Callable[[], None] = lambda: None
        # With weft.direct: schedules one write for the event-loop turn (see _attach).
        self._flush_soon: Callable[[], None] | None = None
        self._tasks: anyio.CancelScope | None = None
        direct = websocket.scope.get("extensions", {}).get(EXTENSION)
        self.direct = direct if isinstance(direct, DirectSocket) else None
        self.extra = {
            "notebook_id": str(room.notebook_id),
            "conn_id": client.conn_id,
            "user_id": client.user_id,
            "role": principal.role.label,
            "socket": "asgi" if self.direct is None else "direct",
        }

    def revoke(self, code: CloseCode, reason: str) -> None:
        """Close because access changed (collab.auth.access_watch)."""
        self.client.close(code, reason)

    # -- the outbox's hooks ---------------------------------------------------------------

    def frames_queued(self) -> None:
        if self._flush_soon is None:
            self.client.wake()  # the sender task drains it
        else:
            self._flush_soon()

    def overflowed(self) -> None:
        # Waiting for the socket is futile: stop this connection's tasks at once.
        if self._tasks is not None:
            self._tasks.cancel()

    async def run(self) -> None:
        direct = self.direct
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._tasks = tg.cancel_scope
            self.client.attach(self)
            if direct is not None:
                self._attach(direct, tg.cancel_scope)
                tg.start_soon(self._direct_send_loop, tg.cancel_scope)
            else:
                tg.start_soon(self._send_loop, tg.cancel_scope)
            await self._receive_loop()
            if self.disconnected:
                tg.cancel_scope.cancel()
        self.finished = True
        if self.client.closing:
            if self.metrics is not None:
                self.metrics.refused_frames.labels(code=str(self.client.close_code)).inc()
            log.warning(
                "closing connection: %s",
                self.client.close_reason,
                extra={**self.extra, "close_code": self.client.close_code},
            )
        if self.client.closing and not self.disconnected:
            with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                try:
                    await self.websocket.close(
                        self.client.close_code or CloseCode.NORMAL, self.client.close_reason
                    )
                except (RuntimeError, OSError):
                    pass  # the socket is already gone; nothing left to tell

    async def _receive_loop(self) -> None:
        # With weft.direct, binary frames arrive through on_frame (see _attach) instead;
        # only text frames and the disconnect come this way.
        while not self.client.closing:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self.disconnected = True
                return
            data = message.get("bytes")
            if data is None:
                self._refuse(CloseCode.UNSUPPORTED_DATA, "text frames are not part of the protocol")
                return
            self._handle(data)
            checked = self._checked
            if checked is not None:
                await checked.wait()  # the next frame is read once this one is applied

    def _handle(self, data: bytes) -> None:
        """One binary frame from the client; anything wrong with it closes this connection."""
        limit = self.settings.max_frame_bytes
        if len(data) > limit:
            self._refuse(CloseCode.TOO_BIG, f"frame of {len(data)} bytes exceeds {limit}")
            return
        if self._checked is not None:
            self._waiting.append(data)
            return
        self.frames_in += 1
        # try/except, not the _closing_on_error context manager: this runs for every frame.
        try:
            if self.role < Role.EDITOR and self._refused(data):
                return
            message = protocol.parse_message(data)
            if (
                message.kind is protocol.MessageType.SYNC
                and message.sync_type is not protocol.SyncType.STEP1
                and not self.doc_worker.inline(message.payload)
                and self._tg is not None
            ):
                self._checked = anyio.Event()
                if self.direct is not None:
                    self.direct.pause_reading()
                self._tg.start_soon(self._check_elsewhere, message.payload)
                return
            self.room.receive_message(self.client, message)
        except BaseException as exc:
            self._close_for(exc)

    async def _check_elsewhere(self, update: bytes) -> None:
        """Check a large update in the worker, apply it, then handle the frames that came
        after it (in order, until the next large one)."""
        with self._closing_on_error():
            facts = await self.doc_worker.check(update, self.room.state())
            if not self.client.closing:
                self.room.apply_client_update(self.client, update, facts)
        checked, self._checked = self._checked, None
        if checked is not None:
            checked.set()
        while self._waiting and self._checked is None and not self.client.closing:
            self._handle(self._waiting.popleft())
        if self._checked is None and self.direct is not None:
            self.direct.resume_reading()

    @contextlib.contextmanager
    def _closing_on_error(self) -> Iterator[None]:
        """What a frame raises closes this connection alone, with a code naming why."""
        try:
            yield
        except BaseException as exc:
            self._close_for(exc)

    def _close_for(self, exc: BaseException) -> None:
        """Close this connection alone for what handling a frame raised, with a code naming
        why; re-raise what is not the frame's doing (cancellation, KeyboardInterrupt)."""
        if isinstance(exc, DocumentFull):
            self._refuse(CloseCode.DOCUMENT_FULL, exc.message)
        elif isinstance(exc, ProtocolError):
            self._refuse(CloseCode.PROTOCOL_ERROR, exc.message)
        elif isinstance(exc, Unavailable):
            self._refuse(CloseCode.UNAVAILABLE, exc.message)
        elif isinstance(exc, Exception):
            # A bug of ours, not the client's: this connection ends, the room goes on.
            log.error("frame handling failed", exc_info=exc, extra=self.extra)
            self._refuse(CloseCode.INTERNAL_ERROR, "internal error")
        elif is_binding_panic(exc):
            self._refuse(CloseCode.PROTOCOL_ERROR, "update rejected by the CRDT decoder")
        else:
            raise exc

    # -- weft.direct: frames straight from and to the socket (collab.sync.direct_socket) -----

    def _attach(self, direct: DirectSocket, scope: anyio.CancelScope) -> None:
        def flush() -> None:
            if self.finished or not direct.writable:
                return  # a full socket calls on_writable once it drains
            frames = self.client.take()
            if frames and not direct.write_binary(frames):
                self.disconnected = True
                scope.cancel()

        def on_frame(data: bytes) -> None:
            if not (self.finished or self.client.closing):
                self._handle(data)

        self._flush = flush
        schedule_flush = direct.scheduler(flush)
        self._flush_soon = schedule_flush
        direct.on_writable = schedule_flush
        direct.receive_with(on_frame)
        if self.client.pending:
            schedule_flush()

    async def _direct_send_loop(self, scope: anyio.CancelScope) -> None:
        try:
            await self.client.closed.wait()
            self._flush()  # what was queued before the close goes first, if the socket takes it
        finally:
            scope.cancel()

    def _refused(self, frame: bytes) -> bool:
        """A viewer's document update: never applied, stored or broadcast; counted, logged,
        and the client told once. Its other messages (sync step 1, presence) go through."""
        message = protocol.parse_message(frame)
        if message.kind is not protocol.MessageType.SYNC:
            return False
        if message.sync_type is protocol.SyncType.STEP1:
            return False
        if message.payload == _EMPTY_UPDATE:
            return True  # a step 2 with nothing in it: nothing to refuse
        self.refused_updates += 1
        if self.metrics is not None:
            self.metrics.refused_updates.inc()
        if self.refused_updates == 1:
            log.warning("update refused: read-only connection", extra=self.extra)
            self.client.send(access_notice(self.role, self.refused_updates))
        return True

    def _refuse(self, code: CloseCode, reason: str) -> None:
        # A close reason must fit in a control frame (123 bytes).
        self.client.close(code, reason.encode()[:120].decode(errors="ignore"))

    async def _send_loop(self, scope: anyio.CancelScope) -> None:
        try:
            while True:
                await self.client.wait()
                for frame in self.client.take():
                    await self.websocket.send_bytes(frame)
                if self.client.closing:
                    return
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.disconnected = True
        finally:
            # Sender done (closing, or the socket died): stop reading too.
            scope.cancel()


async def sync_endpoint(websocket: WebSocket) -> None:
    services: SocketServices = kept_services(websocket)
    rooms = services.rooms
    settings = services.settings
    await websocket.accept()
    notebook_id = parse_uuid(websocket.path_params["notebook_id"])
    if notebook_id is None:
        await websocket.close(CloseCode.UNKNOWN_NOTEBOOK, "unknown notebook")
        return
    extra = {"notebook_id": str(notebook_id)}
    try:
        principal = await require_notebook(websocket, notebook_id, Role.VIEWER)
    except Unauthorized as exc:
        log.info("refused: not signed in", extra=extra)
        await websocket.close(CloseCode.UNAUTHORIZED, exc.message[:120])
        return
    except Forbidden as exc:
        log.info("refused: forbidden", extra=extra)
        await websocket.close(CloseCode.FORBIDDEN, exc.message[:120])
        return
    except NotFound:
        log.info("refused: unknown notebook", extra=extra)
        await websocket.close(CloseCode.UNKNOWN_NOTEBOOK, "unknown notebook")
        return
    try:
        room = await rooms.acquire(notebook_id)
    except NotFound:
        log.info("refused: unknown notebook", extra=extra)
        await websocket.close(CloseCode.UNKNOWN_NOTEBOOK, "unknown notebook")
        return
    except Unavailable as exc:
        await websocket.close(CloseCode.UNAVAILABLE, exc.message[:120])
        return
    client = Outbox(
        uuid.uuid4().hex[:12], settings.client_send_queue, str(principal.user_id), principal.name
    )
    connection = Connection(
        websocket,
        room,
        client,
        settings,
        services.metrics,
        principal=principal,
        credential_digest=credential_digest(websocket),
        doc_worker=rooms.doc_worker,
    )
    log.info("client joined", extra={**connection.extra, "clients": len(room.clients) + 1})
    services.sockets.add(connection)
    try:
        room.join(client)
        rooms.hooks.person_joined(room, principal)
        if principal.role < Role.EDITOR:
            client.send(access_notice(principal.role, 0))
        await connection.run()
    finally:
        services.sockets.discard(connection)
        room.leave(client)
        rooms.release(room)
        log.info(
            "client left",
            extra={
                **connection.extra,
                "close_code": client.close_code,
                "frames_in": connection.frames_in,
                "clients": len(room.clients),
            },
        )
