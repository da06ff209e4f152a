"""Durability: what anyone has seen survives a crash; compaction, unload and reload;
a document that cannot be loaded is never served empty."""

from __future__ import annotations

import re
import uuid

import anyio
import asyncpg
import httpx
import pytest
from pycrdt import Array

from tests.conftest import StartServer, new_notebook, notebook_on
from tests.support.nodeclient import node_client
from tests.support.pyclient import py_client

pytestmark = pytest.mark.anyio


async def test_sigkill_loses_nothing_anyone_received(start_server: StartServer):
    server = await start_server()
    notebook_id = await notebook_on(server)
    async with (
        node_client(server.ws_base, notebook_id, token=server.token) as alice,
        node_client(server.ws_base, notebook_id, token=server.token) as bob,
        node_client(server.ws_base, notebook_id, token=server.token) as watcher,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: alice.call("type", prefix="a", count=400, interval=2, timeout=60))
            tg.start_soon(lambda: bob.call("type", prefix="b", count=400, interval=2, timeout=60))
            await watcher.wait_text("a40 ")
            await watcher.wait_text("b40 ")
            server.kill()  # mid-typing: no shutdown, no flush
        # What the watcher (who never typed) received came only through the server.
        seen = await watcher.text()
        # Stop every client before the restart, so none can re-send what it holds.
    stamps = set(re.findall(r"[ab]\d+ ", seen))
    assert len(stamps) >= 80

    await server.start()
    async with py_client(server.ws_base, notebook_id, token=server.token) as fresh:
        reloaded = fresh.text()
    missing = [s for s in stamps if s not in reloaded]
    assert not missing, f"{len(missing)} updates seen before the crash were lost: {missing[:5]}"


async def test_edits_survive_restart_and_room_unload(start_server: StartServer):
    server = await start_server(WEFT_ROOM_GRACE_SECONDS="0.2")
    async with httpx.AsyncClient(base_url=server.url, headers=server.auth) as api:
        notebook_id = await new_notebook(api)
        async with node_client(server.ws_base, notebook_id, token=server.token) as alice:
            await alice.call("insert", text="first")
            await alice.call("add_cell", source="second cell", cell_id="c2")
        # The room unloads after its grace period and loads again on the next connect.
        with anyio.fail_after(10):
            while (await api.get("/healthz")).json()["rooms"]:
                await anyio.sleep(0.05)
        async with py_client(server.ws_base, notebook_id, token=server.token) as reader:
            assert reader.text() == "first"
            assert reader.text(1) == "second cell"
        server.stop()
        await server.start()
        async with py_client(server.ws_base, notebook_id, token=server.token) as reader:
            assert reader.text() == "first"
            assert len(reader.doc.get("cells", type=Array)) == 2


async def test_log_is_compacted_into_a_snapshot(start_server: StartServer, database_url: str):
    server = await start_server(WEFT_COMPACT_AFTER_UPDATES="50")
    notebook_id = await notebook_on(server)
    async with py_client(server.ws_base, notebook_id, token=server.token) as writer:
        for n in range(120):
            await writer.insert(len(writer.text()), f"{n},")
        async with py_client(server.ws_base, notebook_id, token=server.token) as reader:
            await reader.wait_text("119,")
    conn = await asyncpg.connect(database_url)
    try:
        with anyio.fail_after(10):
            while True:
                snapshot_seq = await conn.fetchval(
                    "SELECT seq FROM document_snapshots WHERE notebook_id = $1",
                    uuid.UUID(notebook_id),
                )
                tail = await conn.fetchval(
                    "SELECT count(*) FROM document_updates WHERE notebook_id = $1",
                    uuid.UUID(notebook_id),
                )
                if snapshot_seq >= 50:
                    break
                await anyio.sleep(0.05)
        assert tail < 120
    finally:
        await conn.close()
    server.stop()
    await server.start()
    async with py_client(server.ws_base, notebook_id, token=server.token) as reader:
        assert reader.text() == "".join(f"{n}," for n in range(120))


async def test_unreadable_document_is_never_served_or_overwritten(
    start_server: StartServer, database_url: str
):
    server = await start_server()
    async with httpx.AsyncClient(base_url=server.url, headers=server.auth) as api:
        notebook_id = await new_notebook(api)
        conn = await asyncpg.connect(database_url)
        try:
            corrupt = b"\x01\x02\xff\xff\xff\xff"
            await conn.execute(
                "UPDATE document_snapshots SET data = $2 WHERE notebook_id = $1",
                uuid.UUID(notebook_id),
                corrupt,
            )
            async with py_client(
                server.ws_base, notebook_id, token=server.token, sync=False
            ) as client:
                code, reason = await client.wait_closed()
            assert code == 1013
            assert "could not be read" in reason
            export = await api.get(f"/api/notebooks/{notebook_id}/export")
            assert export.status_code == 503
            assert (
                await conn.fetchval(
                    "SELECT data FROM document_snapshots WHERE notebook_id = $1",
                    uuid.UUID(notebook_id),
                )
                == corrupt
            )
            assert await conn.fetchval("SELECT count(*) FROM document_updates") == 0
        finally:
            await conn.close()
    assert "stored document is unreadable" in server.log_text()
