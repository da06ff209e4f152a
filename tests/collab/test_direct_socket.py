"""The weft.direct extension (collab/sync/direct_socket.py) and the plain-ASGI path beside it.

``weft serve`` writes frames straight to each socket's transport and reads them without a
task switch; with ``WEFT_WS_DIRECT=off`` (or under another ASGI server) the same
connection code goes through ASGI ``send``/``receive``. Both must behave the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import anyio
import pytest
import sniffio
from pycrdt import Array, Doc, Text
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from collab.sync import protocol
from collab.sync.direct_socket import _LastFrame, encode_binary_frames, turn_flushes
from tests.conftest import StartServer, notebook_on
from tests.support.nodeclient import node_client
from tests.support.pyclient import py_client
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio

MODES = ["on", "off"]
SOCKET_OF_MODE = {"on": "direct", "off": "asgi"}


def parse_frames(data: bytes, count: int) -> list[Frame]:
    """Read ``count`` frames as the websockets library's client reads a server's."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    for _ in range(count):
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            next(parser)
        except StopIteration as done:
            frames.append(done.value)
        else:
            raise AssertionError("frame incomplete")
    assert reader.at_eof() or not reader.buffer
    return frames


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 300_000])
def test_frames_are_what_a_websocket_client_reads(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    # Two at once, as a room's flush writes them: the second must start where the first ends.
    (first, second) = parse_frames(encode_binary_frames([payload, b"next"]), 2)
    assert (first.opcode, first.fin, first.data) == (Opcode.BINARY, True, payload)
    assert (second.opcode, second.data) == (Opcode.BINARY, b"next")


@pytest.mark.parametrize("size", [1, 125, 126, 65535, 65536])
def test_a_lone_frame_reused_for_every_client_is_its_own_payload_framed(size: int) -> None:
    # A broadcast writes one bytes object to every client: the framing is made once and
    # reused; an equal payload in another object, or any other, is framed afresh.
    last = _LastFrame()
    payload = bytes([size % 251]) * size
    wire = last.encode(payload)
    assert last.encode(payload) is wire
    (frame,) = parse_frames(wire, 1)
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.BINARY, True, payload)
    equal = bytes(bytearray(payload))
    assert equal is not payload
    reframed = last.encode(equal)
    assert reframed == wire
    assert reframed is not wire
    other = payload[:-1] + b"!"
    (frame,) = parse_frames(last.encode(other), 1)
    assert frame.data == other
    (frame,) = parse_frames(last.encode(payload), 1)
    assert frame.data == payload


def test_a_large_lone_frame_is_framed_but_not_kept() -> None:
    last = _LastFrame()
    small = b"keystroke"
    kept = last.encode(small)
    large = bytes(_LastFrame.KEPT_BYTES + 1)
    (frame,) = parse_frames(last.encode(large), 1)
    assert frame.data == large
    assert last.encode(large) is not last.encode(large)  # framed afresh: nothing held
    assert last.encode(small) is kept  # the small one is still the one kept


def sockets_joined(server: ServerProcess) -> set[str]:
    kinds = set()
    for line in server.log_text().splitlines():
        if '"client joined"' in line:
            kinds.add(json.loads(line)["socket"])
    return kinds


async def test_a_turns_flushes_run_together_in_order_and_one_failing_stops_no_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    flushes = turn_flushes(loop)
    assert turn_flushes(loop) is flushes  # one for the loop
    ran: list[str] = []

    def flush(name: str) -> None:
        ran.append(f"{name}:{sniffio.current_async_library()}")
        if name == "b":
            raise RuntimeError("this connection's socket is gone")
        if name == "c":
            flushes.add(lambda: ran.append("c-again"))  # a frame queued while flushing

    def elsewhere() -> None:
        ran.append("another callback")

    for name in "abc":
        flushes.add(lambda name=name: flush(name))
        if name == "a":
            loop.call_soon(elsewhere)  # scheduled after the first flush of the turn
    with caplog.at_level(logging.ERROR, logger="collab.sync.direct_socket"):
        await asyncio.sleep(0)  # one turn
        # All three in the one callback the first one scheduled; c's new flush waits for
        # the next turn; b's failure was logged and did not stop c.
        assert ran == ["a:asyncio", "b:asyncio", "c:asyncio", "another callback"]
        await asyncio.sleep(0)
    assert ran[-1] == "c-again"
    assert "flushing a connection failed" in caplog.text


@pytest.mark.parametrize("mode", MODES)
async def test_edits_flow_both_ways_through_a_long_session(start_server: StartServer, mode: str):
    server = await start_server(WEFT_WS_DIRECT=mode)
    notebook_id = await notebook_on(server)
    async with (
        node_client(server.ws_base, notebook_id, token=server.token) as alice,
        py_client(server.ws_base, notebook_id, token=server.token) as bob,
    ):
        await alice.call("insert", text="one ")
        await bob.wait_text("one ")
        # Past the search indexer's 1 s debounce: the next edit takes the path that first
        # touches a room (anyio's clock, read from a transport callback under weft.direct).
        await anyio.sleep(1.5)
        await bob.insert(0, "two ")
        await alice.wait_text("two one ")
        await alice.call("insert", text="three")
        await bob.wait_text("three")
        assert not bob.closed.is_set()
        assert await alice.text() == bob.text()
    assert sockets_joined(server) == {SOCKET_OF_MODE[mode]}
    events = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
    assert not [e for e in events if e["logger"].startswith("collab.") and e["level"] != "info"]


@pytest.mark.parametrize("mode", MODES)
async def test_bad_frames_close_one_connection_in_either_mode(start_server: StartServer, mode: str):
    server = await start_server(WEFT_WS_DIRECT=mode)
    notebook_id = await notebook_on(server)
    async with (
        node_client(server.ws_base, notebook_id, token=server.token) as alice,
        py_client(server.ws_base, notebook_id, token=server.token) as mallory,
        py_client(server.ws_base, notebook_id, token=server.token) as text_sender,
    ):
        await mallory.ws.send(protocol.create_update_message(b"\x05\xff\xff\xff\x01"))
        await text_sender.ws.send("hello")
        assert (await mallory.wait_closed())[0] == 1002
        assert (await text_sender.wait_closed())[0] == 1003
        await alice.call("insert", text="still-live")
        assert "still-live" in await alice.text()
    assert sockets_joined(server) == {SOCKET_OF_MODE[mode]}


async def test_frames_sent_before_the_room_is_ready_are_applied_in_order(
    start_server: StartServer,
):
    """A client may send its sync step 1 and edits right after the handshake, while the
    server still checks its access and loads the room: none may be lost or reordered."""
    server = await start_server()
    notebook_id = await notebook_on(server)
    async with py_client(server.ws_base, notebook_id, token=server.token) as reader:
        await reader.wait_text("")
        url = f"{server.ws_base}/{notebook_id}?token={server.token}"
        async with connect(url, compression=None) as raw:
            # An editor that never waits: the document's cell comes from the reader's copy.
            doc: Doc[Any] = Doc()
            doc.apply_update(reader.doc.get_update())
            updates: list[bytes] = []
            doc.observe(lambda e: updates.append(bytes(e.update)))
            source: Text = doc.get("cells", type=Array)[0]["source"]
            for n in range(20):
                source.insert(len(source), f"<{n}>")
            await raw.send(protocol.create_sync_step1_message(b"\x00"))
            for update in updates:
                await raw.send(protocol.create_update_message(update))
            expected = "".join(f"<{n}>" for n in range(20))
            await reader.wait_text(expected)
            assert reader.text() == expected
