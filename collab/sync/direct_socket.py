"""The ``weft.direct`` ASGI extension: whole binary messages written straight to a
WebSocket's transport, and read straight from it, under ``weft serve`` (uvicorn).

Why: a room fans every update out to every other client. Through plain ASGI each frame
costs a task switch, an ``await send()``, a frame object in the ``websockets`` state
machine and a ``send()`` system call, and each received frame a queue, a pause and resume
of reading and another task switch. At 50 clients typing that is ~25,000 frames a second,
and the Python around each one, not the network, was the server's main cost (see
docs/performance.md). With this extension a room queues frames for a client, and once
per event-loop turn they go to its transport in one write; received frames reach the room
synchronously from ``data_received``.

The application asks for the extension in ``scope["extensions"]`` and falls back to plain
ASGI sends and receives when it is absent (another ASGI server, or ``WEFT_WS_DIRECT=off``).
Only complete, unfragmented binary messages are written here; the protocol object keeps
writing everything else (handshake, pings, pongs, close), always as whole frames, so the
two never interleave inside a frame.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sniffio
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

EXTENSION = "weft.direct"

_FIN_BINARY = 0x82  # FIN bit and opcode 2 (binary); frames from a server are never masked
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")

log = logging.getLogger(__name__)


def _header(size: int) -> bytes:
    if size < 126:
        return _SHORT.pack(_FIN_BINARY, size)
    if size < 1 << 16:
        return _MEDIUM.pack(_FIN_BINARY, 126, size)
    return _LONG.pack(_FIN_BINARY, 127, size)


def encode_binary_frames(payloads: Iterable[bytes]) -> bytes:
    """RFC 6455 binary frames, one per payload, concatenated."""
    parts: list[bytes] = []
    for payload in payloads:
        parts.append(_header(len(payload)))
        parts.append(payload)
    return b"".join(parts)


class _LastFrame:
    """The wire bytes of the last lone frame written, for the next write of the same one.

    A room hands one bytes object to all of its clients for each update (and each presence
    change); they are written in the same turn, mostly one frame each, so all but the first
    reuse the first one's framing instead of building it again. Compared by identity, and
    the payload is held, so a new object cannot be taken for it; payload and wire bytes are
    one tuple, replaced whole, so a server's loop in another thread never sees a mix. Only
    frames up to ``KEPT_BYTES`` are kept: a large one (a joiner's whole document) would
    otherwise stay in memory, twice, until the next frame, for a saving nobody needs."""

    __slots__ = ("_last",)
    KEPT_BYTES = 64 * 1024

    def __init__(self) -> None:
        self._last = (b"", b"")

    def encode(self, payload: bytes) -> bytes:
        last = self._last
        if last[0] is payload:
            return last[1]
        wire = _header(len(payload)) + payload
        if len(payload) <= self.KEPT_BYTES:
            self._last = (payload, wire)
        return wire


_last_frame = _LastFrame()


def as_asyncio_code(function: Callable[..., None]) -> Callable[..., None]:
    """Run ``function`` as if from an asyncio task. Transport callbacks run outside any
    task, where sniffio (and so anyio: ``anyio.Event()``, ``current_time()``) cannot tell
    which library runs the loop; everything a frame reaches (rooms, the writer, the search
    indexer) is written for task context."""

    def run(*args: Any) -> None:
        token = sniffio.current_async_library_cvar.set("asyncio")
        try:
            function(*args)
        finally:
            sniffio.current_async_library_cvar.reset(token)

    return run


class TurnFlushes:
    """The flushes due in an event loop's next turn, run from one callback.

    A room's broadcast queues a frame for each of its clients; one loop callback per client
    (and switching sniffio to asyncio for each) was a fixed cost of every frame fanned out.
    Here the first flush of a turn schedules the callback and the others join it; a flush
    asked for while they run (a frame queued by one of them) goes to the next turn, as it
    did with a callback of its own. One for each event loop (``for_loop``).
    """

    __slots__ = ("__weakref__", "_due", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: list[Callable[[], None]] = []

    def add(self, callback: Callable[[], None]) -> None:
        if not self._due:
            self._loop.call_soon(self._run)
        self._due.append(callback)

    def _run(self) -> None:
        due, self._due = self._due, []
        token = sniffio.current_async_library_cvar.set("asyncio")
        try:
            for callback in due:
                try:
                    callback()
                except Exception:  # one connection's failure is not the others'
                    log.exception("flushing a connection failed")
        finally:
            sniffio.current_async_library_cvar.reset(token)


_turn_flushes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TurnFlushes] = (
    weakref.WeakKeyDictionary()
)


def turn_flushes(loop: asyncio.AbstractEventLoop) -> TurnFlushes:
    """The loop's ``TurnFlushes`` (made on first use; it goes with the loop)."""
    flushes = _turn_flushes.get(loop)
    if flushes is None:
        flushes = _turn_flushes[loop] = TurnFlushes(loop)
    return flushes


class DirectSocket:
    """What the extension hands the application for one connection.

    >>> direct = websocket.scope["extensions"]["weft.direct"]
    >>> direct.on_writable = flush          # called when a full socket drains again
    >>> direct.scheduler(flush)()           # flush in the event loop's next turn
    >>> direct.receive_with(handle_frame)   # binary messages from now on, in order
    >>> direct.write_binary([frame, frame]) # False once the socket is closed
    """

    def __init__(self, protocol: DirectWebSocketProtocol) -> None:
        self._protocol = protocol
        self.on_writable: Callable[[], None] | None = None

    def scheduler(self, callback: Callable[[], None]) -> Callable[[], None]:
        """A function that runs ``callback`` (as asyncio code, see above) in the event
        loop's next turn, with every other connection's flush of that turn."""
        # A partial, not a closure: it is called for every client for every update.
        return functools.partial(turn_flushes(self._protocol.loop).add, callback)

    @property
    def writable(self) -> bool:
        """False while the transport's buffer is above its high-water mark: the peer is not
        reading. Keep frames queued until ``on_writable`` is called."""
        return self._protocol.writable.is_set()

    def write_binary(self, payloads: Sequence[bytes]) -> bool:
        """Write whole binary messages; False (nothing written) once the socket is closed.
        Runs for every client for every update: the checks read the protocol's fields."""
        p = self._protocol
        transport = p.transport
        if not p.handshake_complete or p.close_sent or p.disconnected or transport.is_closing():
            return False
        if len(payloads) == 1:
            transport.write(_last_frame.encode(payloads[0]))
        else:
            transport.write(encode_binary_frames(payloads))
        return True

    def pause_reading(self) -> None:
        """Read no more from the socket (frames already read are still delivered), as
        uvicorn does while its queue is full: the peer waits in TCP, not in our memory."""
        protocol = self._protocol
        if not protocol.read_paused and not protocol.transport.is_closing():
            protocol.read_paused = True
            protocol.transport.pause_reading()

    def resume_reading(self) -> None:
        protocol = self._protocol
        if protocol.read_paused and not protocol.transport.is_closing():
            protocol.read_paused = False
            protocol.transport.resume_reading()

    def receive_with(self, handler: Callable[[bytes], None]) -> None:
        """Deliver every binary message to ``handler`` from now on, starting with those
        already waiting for the application. Text messages and the disconnect still
        arrive through ASGI ``receive``. The handler must not raise."""
        self._protocol.receive_with(as_asyncio_code(handler))


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, offering ``weft.direct`` to the application."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._direct: DirectSocket | None = None
        self._handler: Callable[[bytes], None] | None = None

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The application task is created but has not started: it will see the extension.
        if self.handshake_initiated and not self.close_sent:
            self._direct = DirectSocket(self)
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            extensions[EXTENSION] = self._direct

    def receive_with(self, handler: Callable[[bytes], None]) -> None:
        waiting: list[Any] = []
        while not self.queue.empty():
            waiting.append(self.queue.get_nowait())
        self._handler = handler
        for message in waiting:
            data = message.get("bytes") if message["type"] == "websocket.receive" else None
            if data is not None:
                handler(data)
            else:
                self.queue.put_nowait(message)
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def send_receive_event_to_app(self) -> None:
        handler = self._handler
        if handler is None or self.curr_msg_data_type != "bytes" or self.close_sent:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        handler(data if type(data) is bytes else bytes(data))

    def resume_writing(self) -> None:
        super().resume_writing()
        direct = self._direct
        if direct is not None and direct.on_writable is not None:
            direct.on_writable()
