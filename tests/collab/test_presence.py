"""Presence (awareness) is bounded, belongs to the connection that brought it, and says who
someone is as the server knows them: never what a client claims."""

from __future__ import annotations

import json

import httpx
import pytest

from collab.sync import protocol
from collab.sync.protocol import AwarenessEntry
from collab.sync.room import MAX_AWARENESS_IDS_PER_CLIENT, PALETTE, Outbox, Room
from tests.collab.test_update_fuzz import room_of
from tests.conftest import new_notebook
from tests.support.pyclient import py_client
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio


def presence(room: Room) -> dict[int, dict[str, object]]:
    return {cid: json.loads(state) for cid, state in room.awareness_states().items()}


def say(room: Room, client: Outbox, *entries: tuple[int, int, object]) -> None:
    room.receive(
        client,
        protocol.encode_awareness_message(
            [AwarenessEntry(cid, clock, json.dumps(state)) for cid, clock, state in entries]
        ),
    )


async def test_a_connection_speaks_only_for_its_own_ids_and_loses_them_when_it_leaves(
    database_url: str,
):
    async with room_of(database_url) as (_rooms, room, _pool):
        alice = Outbox("a", 10**6, user_id="alice-id", user_name="Alice")
        mallory = Outbox("m", 10**6, user_id="mallory-id", user_name="Mallory")
        room.join(alice)
        room.join(mallory)
        say(room, alice, (11, 1, {"cell": "c1", "user": {"name": "Alice"}}))
        # Mallory tries to overwrite Alice's presence, remove it, and bring 10,000 ids.
        say(room, mallory, (11, 5, {"user": {"name": "Alice is a fool"}}))
        room.receive(mallory, protocol.encode_awareness_message([AwarenessEntry(11, 9, "null")]))
        say(room, mallory, *[(1000 + n, 1, {"junk": "x" * 100}) for n in range(2000)])
        say(room, mallory, (5, 1, {"big": "y" * 10_000}))
        states = presence(room)
        assert states[11]["user"] == {
            "id": "alice-id",
            "name": "Alice",
            "color": states[11]["user"]["color"],  # type: ignore[index]
            "colorLight": states[11]["user"]["color"] + "33",  # type: ignore[index,operator]
        }
        assert states[11]["cell"] == "c1"
        mallory_ids = [cid for cid in states if cid != 11]
        assert len(mallory_ids) == MAX_AWARENESS_IDS_PER_CLIENT
        for cid in mallory_ids:
            assert states[cid]["user"]["name"] == "Mallory"  # type: ignore[index]
        # Whoever joins now gets a few hundred bytes of presence, not megabytes.
        late = Outbox("l", 10**6, user_id="late", user_name="Late")
        room.join(late)
        assert sum(len(frame) for frame in late.take()) < 4096
        room.leave(mallory)
        assert list(presence(room)) == [11]


async def test_colours_come_from_the_palette_one_per_person_the_same_in_every_browser(
    database_url: str,
):
    async with room_of(database_url) as (_rooms, room, _pool):
        people = [Outbox(f"c{n}", 10**6, user_id=f"user-{n}", user_name=f"P{n}") for n in range(12)]
        for n, client in enumerate(people):
            room.join(client)
            say(room, client, (100 + n, 1, {"user": {"color": "red;background:url(x)"}}))
        colours = {cid: state["user"]["color"] for cid, state in presence(room).items()}  # type: ignore[index]
        assert set(colours.values()) <= set(PALETTE)
        assert len(set(colours.values())) == len(people)
        # The same person in a second browser: the same colour.
        second = Outbox("again", 10**6, user_id="user-3", user_name="P3")
        room.join(second)
        say(room, second, (500, 1, {}))
        assert presence(room)[500]["user"]["color"] == colours[103]  # type: ignore[index]


async def test_presence_over_the_socket_is_stamped_with_the_account(
    server: ServerProcess, api: httpx.AsyncClient
):
    notebook_id = await new_notebook(api)
    async with (
        py_client(server.ws_base, notebook_id, token=server.token) as owner,
        py_client(server.ws_base, notebook_id, token=server.token) as watcher,
    ):
        await owner.ws.send(
            protocol.encode_awareness_message(
                [AwarenessEntry(4242, 1, json.dumps({"user": {"name": "The CEO"}}))]
            )
        )
        import anyio

        with anyio.fail_after(10):
            while 4242 not in watcher.awareness:
                await anyio.sleep(0.02)
        user = json.loads(watcher.awareness[4242])["user"]
        assert user["name"] == "Olive Owner"
        assert user["color"] in PALETTE
