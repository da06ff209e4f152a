"""Several servers, one PostgreSQL: documents stay in sync across servers through the log
and LISTEN/NOTIFY, with no sticky sessions."""

from __future__ import annotations

import re

import anyio
import asyncpg
import httpx
import pytest

from tests.collab.test_metrics import scrape
from tests.conftest import StartServer, notebook_on
from tests.support.nodeclient import node_client

pytestmark = pytest.mark.anyio


async def test_clients_on_two_servers_converge(start_server: StartServer):
    one, two = await start_server(), await start_server()
    notebook_id = await notebook_on(one)
    async with (
        node_client(one.ws_base, notebook_id, token=one.token) as alice,
        node_client(two.ws_base, notebook_id, token=two.token) as bob,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: alice.call("type", prefix="a", count=40, interval=5))
            tg.start_soon(lambda: bob.call("type", prefix="b", count=40, interval=5))
        for client in (alice, bob):
            await client.wait_text("a39 ")
            await client.wait_text("b39 ")
        final = await alice.text()
        assert await bob.text() == final
        assert len(re.findall(r"[ab]\d+ ", final)) == 80
        async with node_client(two.ws_base, notebook_id, token=two.token) as late:
            assert await late.text() == final


async def test_a_client_whose_server_dies_fails_over_and_loses_nothing(start_server: StartServer):
    one, two = await start_server(), await start_server()
    notebook_id = await notebook_on(one)
    async with (
        node_client(one.ws_base, notebook_id, token=one.token) as alice,
        node_client(two.ws_base, notebook_id, token=two.token) as bob,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: alice.call("type", prefix="a", count=200, interval=3, timeout=60))
            await bob.wait_text("a30 ")
            one.kill()  # Alice keeps typing into her own document, offline
        await alice.call("switch", base=two.ws_base)
        await bob.wait_text("a199 ", timeout=20)
        assert await bob.text() == await alice.text()


async def test_a_missed_notification_is_noticed_and_filled(
    start_server: StartServer, database_url: str
):
    one = await start_server()
    two = await start_server(WEFT_FEED_POLL_SECONDS="1")
    notebook_id = await notebook_on(one)
    async with (
        node_client(one.ws_base, notebook_id, token=one.token) as alice,
        node_client(two.ws_base, notebook_id, token=two.token) as bob,
    ):
        await alice.call("insert", text="before ")
        await bob.wait_text("before ")
        # Cut server two's LISTEN connection: the notices sent meanwhile never reach it.
        conn = await asyncpg.connect(database_url)
        try:
            assert two.proc is not None
            # The feed's connection: its last statement was its last LISTEN.
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1 AND query LIKE 'LISTEN \"weft_nodes\"%'",
                f"weft:{two.proc.pid}",
            )
            assert killed == 1
        finally:
            await conn.close()
        await alice.call("insert", text="while-deaf ")
        await bob.wait_text("while-deaf ", timeout=10)
        await alice.call("insert", text="after ")
        await bob.wait_text("after ", timeout=10)
    assert "lost its LISTEN connection" in two.log_text()


async def test_presence_crosses_servers(start_server: StartServer):
    one, two = await start_server(), await start_server()
    notebook_id = await notebook_on(one)
    async with node_client(two.ws_base, notebook_id, token=two.token) as bob:
        async with node_client(one.ws_base, notebook_id, token=one.token) as alice:
            await alice.call("awareness", state={"user": {"name": "Alice"}})
            with anyio.fail_after(10):
                while not any("user" in p["state"] for p in (await bob.call("peers"))["peers"]):
                    await anyio.sleep(0.05)
        # Alice's server tells Bob's that she left.
        with anyio.fail_after(10):
            while (await bob.call("peers"))["peers"]:
                await anyio.sleep(0.05)


async def test_a_lone_server_sends_no_notices_until_another_says_it_is_there(
    start_server: StartServer, database_url: str
):
    """Appends and presence are announced only while another server may hear them."""
    heard: dict[str, list[str]] = {"weft_documents": [], "weft_awareness": [], "weft_nodes": []}

    def note(_conn: object, _pid: int, channel: str, payload: str) -> None:
        heard[channel].append(payload)

    listener = await asyncpg.connect(database_url)
    try:
        for channel in heard:
            await listener.add_listener(channel, note)
        one = await start_server(WEFT_FEED_POLL_SECONDS="0.3")
        notebook_id = await notebook_on(one)
        async with node_client(one.ws_base, notebook_id, token=one.token) as alice:
            # Its "here" at LISTEN time, then one every interval; it waits 3 intervals.
            with anyio.fail_after(10):
                while len(heard["weft_nodes"]) < 4:
                    await anyio.sleep(0.05)
            assert all(p.startswith("here:") for p in heard["weft_nodes"]), heard
            await anyio.sleep(0.3)
            heard["weft_documents"].clear()
            heard["weft_awareness"].clear()
            await alice.call("insert", text="alone ")
            await alice.call("awareness", state={"user": {"name": "Alice"}})
            async with node_client(one.ws_base, notebook_id, token=one.token) as bob:
                await bob.wait_text("alone ")
            await anyio.sleep(0.3)
            assert heard["weft_documents"] == []
            assert heard["weft_awareness"] == []
            # Another server says it is there: appends and presence are announced again.
            await listener.execute("SELECT pg_notify('weft_nodes', 'here:elsewhere')")
            await anyio.sleep(0.2)
            await alice.call("insert", text="heard ")
            await alice.call("awareness", state={"user": {"name": "Alice", "n": 2}})
            with anyio.fail_after(5):
                while not (heard["weft_documents"] and heard["weft_awareness"]):
                    await anyio.sleep(0.05)
            assert heard["weft_documents"][0].startswith(f"{notebook_id}:")
            async with httpx.AsyncClient(base_url=one.url, headers=one.auth) as api:
                assert (await scrape(api))["weft_other_servers"] == 1
            # It said goodbye: quiet again at once.
            await listener.execute("SELECT pg_notify('weft_nodes', 'bye:elsewhere')")
            await anyio.sleep(0.2)
            heard["weft_documents"].clear()
            await alice.call("insert", text="gone ")
            async with node_client(one.ws_base, notebook_id, token=one.token) as carol:
                await carol.wait_text("gone ")
            await anyio.sleep(0.3)
            assert heard["weft_documents"] == []
            async with httpx.AsyncClient(base_url=one.url, headers=one.auth) as api:
                assert (await scrape(api))["weft_other_servers"] == 0
    finally:
        await listener.close()
