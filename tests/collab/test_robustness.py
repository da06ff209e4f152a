"""Bad input closes one connection with a clear code; everyone else keeps syncing."""

from __future__ import annotations

import httpx
import pytest
from websockets.asyncio.client import connect

from collab.sync import protocol
from tests.conftest import StartServer, new_notebook, notebook_on
from tests.support.nodeclient import node_client
from tests.support.pyclient import py_client
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio

# An update y-py's decoder panics on (pyo3's PanicException, a BaseException): found by
# mutating a valid update; the Any-content tag 0x7d is followed by bytes it cannot read.
PANIC_UPDATE = bytes.fromhex("01020700040101740568656c6c6f2801016d016b017601016175027dfd7d0200")

MALFORMED = {
    "unknown message type": b"\x09\x00",
    "truncated varint": b"\x00\x02\xff",
    "length past end": b"\x00\x02\x50abc",
    "unknown sync type": b"\x00\x07\x00",
    "garbage update": protocol.create_update_message(b"\x05\xff\xff\xff\x01"),
    "panicking update": protocol.create_update_message(PANIC_UPDATE),
    "bad state vector": protocol.create_sync_step1_message(b"\x05\x01"),
    "awareness not json": protocol.encode_awareness_message(
        [protocol.AwarenessEntry(7, 1, "{not json")]
    ),
    "empty frame": b"",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_malformed_frame_closes_only_that_connection(
    name: str, server: ServerProcess, api: httpx.AsyncClient
):
    notebook_id = await new_notebook(api)
    async with (
        node_client(server.ws_base, notebook_id, token=server.token) as alice,
        py_client(server.ws_base, notebook_id, token=server.token) as bob,
        py_client(server.ws_base, notebook_id, token=server.token) as mallory,
    ):
        await mallory.ws.send(MALFORMED[name])
        code, reason = await mallory.wait_closed()
        assert code == 1002, (code, reason)
        assert reason
        # The document and everyone else are untouched and still live.
        await alice.call("insert", text="still-live")
        await bob.wait_text("still-live")
        await bob.insert(0, "bob-too ")
        await alice.wait_text("bob-too ")
    assert "closing connection" in server.log_text()


async def test_text_frame_is_refused(server: ServerProcess, api: httpx.AsyncClient):
    notebook_id = await new_notebook(api)
    async with py_client(server.ws_base, notebook_id, token=server.token) as client:
        await client.ws.send("hello")
        code, _ = await client.wait_closed()
        assert code == 1003


async def test_oversized_frame_is_refused(start_server: StartServer):
    server = await start_server(WEFT_MAX_FRAME_BYTES="65536")
    notebook_id = await notebook_on(server)
    async with (
        node_client(server.ws_base, notebook_id, token=server.token) as alice,
        py_client(server.ws_base, notebook_id, token=server.token) as big,
    ):
        # A frame just under the limit is fine.
        await big.insert(0, "y" * 60_000)
        await alice.wait_text("y" * 100)
        await big.insert(0, "x" * 70_000)
        code, reason = await big.wait_closed()
        assert code == 1009
        assert "exceeds 65536" in reason
        await alice.call("insert", text="after")
        assert "x" * 100 not in await alice.text()


# "on": frames wait in the client's queue while its socket's buffer is full (weft.direct);
# "off": they wait while the sender task is stuck in a send (plain ASGI).
@pytest.mark.parametrize("direct", ["on", "off"])
async def test_slow_client_is_disconnected_not_buffered(start_server: StartServer, direct: str):
    server = await start_server(WEFT_CLIENT_SEND_QUEUE="32", WEFT_WS_DIRECT=direct)
    notebook_id = await notebook_on(server)
    url = f"{server.ws_base}/{notebook_id}?token={server.token}"
    # The slow client syncs and then never reads: its socket buffers fill, then its queue.
    async with (
        connect(url, max_size=None, compression=None, max_queue=1) as slow,
        py_client(server.ws_base, notebook_id, token=server.token) as writer,
        py_client(server.ws_base, notebook_id, token=server.token) as reader,
    ):
        await slow.send(protocol.create_sync_step1_message(b"\x00"))
        chunk = "z" * 60_000
        for n in range(300):
            # Large updates that leave the text small: 120 KB a round for everyone.
            await writer.insert(0, chunk)
            await writer.delete(0, len(chunk))
            await reader.wait_updates(2 * (n + 1))
            if "client too slow" in server.log_text():
                break
        else:
            pytest.fail("the client that never reads was never disconnected")
        # The others were never held up, and stay connected.
        await writer.insert(0, "done")
        await reader.wait_text("done")
        assert not reader.closed.is_set()
        assert not writer.closed.is_set()
    log = server.log_text()
    assert log.count("client too slow") == 1
