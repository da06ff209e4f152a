"""Live sync over /ws/{notebook_id} with official Yjs clients and a Python client."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from tests.conftest import new_notebook
from tests.support.nodeclient import node_client
from tests.support.pyclient import py_client
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio


async def test_official_and_python_clients_converge(server: ServerProcess, api: httpx.AsyncClient):
    notebook_id = await new_notebook(api)
    async with (
        node_client(server.ws_base, notebook_id, token=server.token) as alice,
        node_client(server.ws_base, notebook_id, token=server.token) as bob,
        py_client(server.ws_base, notebook_id, token=server.token) as carol,
    ):
        # All three type into the same cell at once.
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: alice.call("type", prefix="a", count=30, interval=5))
            tg.start_soon(lambda: bob.call("type", prefix="b", count=30, interval=5))

            async def carol_types() -> None:
                for n in range(30):
                    await carol.insert(0, f"c{n} ")
                    await anyio.sleep(0.005)

            tg.start_soon(carol_types)
        for n in (29,):
            for prefix in "abc":
                await alice.wait_text(f"{prefix}{n} ")
                await bob.wait_text(f"{prefix}{n} ")
                await carol.wait_text(f"{prefix}{n} ")
        final = await alice.text()
        assert await bob.text() == final
        assert carol.text() == final
        for prefix in "abc":
            assert all(f"{prefix}{n} " in final for n in range(30))

        # A late joiner receives the whole document in its first sync.
        async with node_client(server.ws_base, notebook_id, token=server.token) as late:
            assert await late.text() == final
            cells = (await late.call("get"))["cells"]
            assert cells[0]["cell_type"] == "code"
            assert cells[0]["metadata"] == {"language": "python"}


async def test_sender_gets_no_echo(server: ServerProcess, api: httpx.AsyncClient):
    notebook_id = await new_notebook(api)
    async with (
        py_client(server.ws_base, notebook_id, token=server.token) as writer,
        py_client(server.ws_base, notebook_id, token=server.token) as reader,
    ):
        for n in range(5):
            await writer.insert(0, f"x{n}")
        await reader.wait_text("x4")
        await anyio.sleep(0.2)
        assert reader.updates_received == 5
        assert writer.updates_received == 0


async def test_presence_joins_and_leaves(server: ServerProcess, api: httpx.AsyncClient):
    notebook_id = await new_notebook(api)
    async with node_client(server.ws_base, notebook_id, token=server.token) as alice:
        await alice.call("awareness", state={"user": {"name": "Alice", "color": "#f00"}})
        async with node_client(server.ws_base, notebook_id, token=server.token) as bob:
            # Bob joined after Alice set her state: the server hands it to him on join.
            with anyio.fail_after(10):
                while not (await bob.call("peers"))["peers"]:
                    await anyio.sleep(0.02)
            peers = (await bob.call("peers"))["peers"]
            # The name is the account's, stamped by the server, not the one Alice claimed.
            assert [p["state"]["user"]["name"] for p in peers] == ["Olive Owner"]
            await bob.call("awareness", state={"user": {"name": "Bob"}})
            with anyio.fail_after(10):
                while not (await alice.call("peers"))["peers"]:
                    await anyio.sleep(0.02)
        # Bob's process is gone without saying goodbye: the server tells Alice.
        with anyio.fail_after(10):
            while (await alice.call("peers"))["peers"]:
                await anyio.sleep(0.02)


async def test_python_client_sees_presence_removal(server: ServerProcess, api: httpx.AsyncClient):
    notebook_id = await new_notebook(api)
    async with py_client(server.ws_base, notebook_id, token=server.token) as watcher:
        async with node_client(server.ws_base, notebook_id, token=server.token) as alice:
            await alice.call("awareness", state={"user": {"name": "Alice"}})
            # y-websocket announces an empty state first, then the one set above; the server
            # stamps both with the account's name.
            with anyio.fail_after(10):
                while not any("user" in json.loads(s) for s in watcher.awareness.values()):
                    await anyio.sleep(0.02)
            (state,) = watcher.awareness.values()
            assert json.loads(state)["user"]["name"] == "Olive Owner"
        with anyio.fail_after(10):
            while watcher.awareness:
                await anyio.sleep(0.02)


async def test_unknown_notebook_is_refused(server: ServerProcess):
    for notebook_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        async with py_client(server.ws_base, notebook_id, token=server.token, sync=False) as client:
            code, reason = await client.wait_closed()
            assert code == 4404
            assert reason == "unknown notebook"
