"""Hostile updates interleaved with honest edits into one long-lived room.

pycrdt alone accepts some mutated updates and is poisoned by them (parked updates, then a
panic, a spin or an abort hundreds of updates later). A room checks every client update
first (collab.sync.update_check); this campaign proves that nothing a hostile editor sends can
break the room, lose or change an honest edit, or stall the event loop.

Size: ``WEFT_FUZZ_UPDATES`` hostile updates (default 10,000; seeded by ``WEFT_FUZZ_SEED``).
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import asyncpg
import pytest
from pycrdt import Array, Doc, Map, Text

from collab.document.notebook import empty_notebook, seed_update
from collab.errors import ProtocolError
from collab.metrics import Metrics
from collab.settings import Settings
from collab.storage.catalog import Catalog
from collab.storage.database import open_pool
from collab.storage.document_store import DocumentStore
from collab.sync import protocol
from collab.sync.room import Outbox, Room
from collab.sync.room_manager import RoomManager

pytestmark = pytest.mark.anyio

UPDATES = int(os.environ.get("WEFT_FUZZ_UPDATES", "10000"))
SEED = int(os.environ.get("WEFT_FUZZ_SEED", "20261201"))


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A few random byte edits: flips, replacements, insertions, deletions, splices."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            out.append(rng.randrange(256))
            continue
        at = rng.randrange(len(out))
        roll = rng.random()
        if roll < 0.4:
            out[at] ^= 1 << rng.randrange(8)
        elif roll < 0.6:
            out[at] = rng.randrange(256)
        elif roll < 0.75:
            out.insert(at, rng.randrange(256))
        elif roll < 0.9:
            del out[at]
        else:
            start = rng.randrange(len(out))
            out[at:at] = out[start : start + rng.randint(1, 8)]
    return bytes(out)


def crafted(rng: random.Random) -> bytes:
    """Updates built to hurt the binding: deep values, gaps, huge claims, foreign roots."""
    head = bytes.fromhex("0101") + protocol.write_var_uint(rng.randrange(1, 2**32)) + b"\x00"
    choice = rng.randrange(5)
    if choice == 0:  # a value nested 100,000 deep (overflowed the binding's stack: SIGSEGV)
        body = b"\x28\x01\x04meta\x01k\x01" + b"\x75\x01" * 100_000 + b"\x7e"
    elif choice == 1:  # an unknown top-level type
        body = b"\x28\x01\x05other\x01k\x01\x7e"
    elif choice == 2:  # a count claiming 2^32 structs
        return b"\x01\xff\xff\xff\xff\x0f\x07\x00"
    elif choice == 3:  # a change far past the client's clock (would be parked)
        head = bytes.fromhex("0101") + protocol.write_var_uint(7) + b"\x90\x4e"
        body = b"\x28\x01\x04meta\x01k\x01\x7e"
    else:  # an item whose origin is an id nobody has
        body = b"\x84\xc7\x01\x05\x01x"
    return head + body + b"\x00"


class Person:
    """An honest collaborator: a document of their own and a place in the room."""

    def __init__(self, name: str, room: Room) -> None:
        self.name = name
        self.doc: Doc[Any] = Doc()
        self.client = Outbox(uuid.uuid4().hex[:12], 10**9, user_id=name, user_name=name)
        self.room = room
        room.join(self.client)
        room.receive(self.client, protocol.create_sync_step1_message(self.doc.get_state()))
        self.stamps: list[str] = []

    def receive(self) -> None:
        for frame in self.client.take():
            message = protocol.parse_message(frame)
            if message.kind is protocol.MessageType.SYNC:
                if message.sync_type is protocol.SyncType.STEP1:
                    reply = self.doc.get_update(message.payload)
                    self.room.receive(self.client, protocol.create_sync_step2_message(reply))
                else:
                    self.doc.apply_update(message.payload)

    def edit(self, rng: random.Random, n: int) -> bytes:
        before = self.doc.get_state()
        cells = self.doc.get("cells", type=Array)
        with self.doc.transaction():
            if rng.random() < 0.1 or len(cells) == 0:
                cell: Map[Any] = Map()
                cells.append(cell)
                cell["id"] = f"{self.name}-{n}"
                cell["source"] = Text("")
            source: Text = cells[rng.randrange(len(cells))]["source"]
            stamp = f"[{self.name}:{n}]"
            self.stamps.append(stamp)
            source.insert(len(source), stamp)
        return self.doc.get_update(before)


@contextlib.asynccontextmanager
async def room_of(database_url: str) -> AsyncIterator[tuple[RoomManager, Room, asyncpg.Pool]]:
    settings = Settings(database_url=database_url, compact_after_updates=400)
    async with open_pool(settings) as pool:
        store = DocumentStore(pool)
        workspace_id, notebook_id = uuid.uuid4(), uuid.uuid4()
        await pool.execute("INSERT INTO workspaces (id, name) VALUES ($1, 'ws')", workspace_id)
        await pool.execute(
            "INSERT INTO notebooks (id, workspace_id, title) VALUES ($1, $2, 'nb')",
            notebook_id,
            workspace_id,
        )
        seed = seed_update(empty_notebook("fuzz"), notebook_id)
        await pool.execute(
            "INSERT INTO document_snapshots (notebook_id, seq, data) VALUES ($1, 0, $2)",
            notebook_id,
            seed,
        )
        async with RoomManager(settings, store, Catalog(pool), Metrics()) as rooms:
            async with rooms.use(notebook_id) as room:
                yield rooms, room, pool


def texts(doc: Doc[Any]) -> list[str]:
    return [str(cell["source"]) for cell in doc.get("cells", type=Array)]


async def test_hostile_updates_never_break_the_room_or_touch_honest_edits(database_url: str):
    rng = random.Random(SEED)
    async with room_of(database_url) as (rooms, room, _pool):
        alice, bob = Person("alice", room), Person("bob", room)
        mallory = Outbox("mallory", 10**9, user_id="mallory", user_name="Mallory")
        room.join(mallory)
        for person in (alice, bob):
            person.receive()
        # Mallory also edits a copy of her own, so mutations carry her own client id too.
        own = Person.__new__(Person)
        own.name, own.stamps = "mallory", []
        own.doc = Doc()
        own.doc.apply_update(room.doc.get_update())
        recent: list[bytes] = []
        mine: list[bytes] = []
        refused = accepted = reconnects = 0
        slowest = 0.0
        started = time.monotonic()
        for n in range(UPDATES):
            # An honest edit: always accepted.
            person = alice if n % 2 else bob
            update = person.edit(rng, n)
            room.receive(person.client, protocol.create_update_message(update))
            recent = [*recent[-40:], update]
            # A hostile one: mutated from what was seen, random, or crafted.
            mine = [*mine[-40:], own.edit(rng, n)]
            roll = rng.random()
            if roll < 0.3:
                hostile = mutate(rng, rng.choice(recent))
            elif roll < 0.6:
                hostile = mutate(rng, rng.choice(mine))
            elif roll < 0.75:
                hostile = mutate(rng, rng.choice(recent) + rng.choice(recent))
            elif roll < 0.9:
                hostile = rng.randbytes(rng.randint(1, 60))
            else:
                hostile = crafted(rng)
            frame = protocol.create_update_message(hostile)
            if rng.random() < 0.2:
                frame = mutate(rng, frame)  # the framing too
            tick = time.perf_counter()
            try:
                room.receive(mallory, frame)
                accepted += 1
            except ProtocolError:
                refused += 1
                # The real connection closes here; the attacker reconnects at once.
                room.leave(mallory)
                mallory = Outbox(f"mallory{n}", 10**9, user_id="mallory", user_name="Mallory")
                room.join(mallory)
                reconnects += 1
            slowest = max(slowest, time.perf_counter() - tick)
            mallory.take()
            assert not room.broken, f"room broken at step {n}"
            if n % 50 == 0:
                await rooms.writer.flushed()
                alice.receive()
                bob.receive()
        await rooms.writer.flushed()
        await rooms.writer.flushed()
        alice.receive()
        bob.receive()
        elapsed = time.monotonic() - started
        print(
            f"fuzz: {UPDATES} hostile updates in {elapsed:.1f}s: {accepted} accepted, "
            f"{refused} refused, slowest {slowest * 1000:.1f} ms"
        )
        assert refused > UPDATES // 2
        assert slowest < 1.0
        # Everyone converged on the room's document, and no honest edit is lost.
        final = texts(room.doc)
        assert texts(alice.doc) == final
        assert texts(bob.doc) == final
        whole = "".join(final)
        missing = [s for s in alice.stamps + bob.stamps if s not in whole]
        assert not missing, missing[:5]
        # The log holds exactly what the room holds.
        stored = await rooms._store.load(room.notebook_id)
        replay: Doc[Any] = Doc()
        for update in stored.updates:
            replay.apply_update(update)
        assert texts(replay) == final


async def test_an_edit_claiming_another_persons_client_id_is_refused(database_url: str):
    """Writing new changes under someone else's Yjs client id would make their next edits
    look like duplicates, silently dropped everywhere: refused."""
    async with room_of(database_url) as (rooms, room, _pool):
        alice = Person("alice", room)
        alice.receive()
        rng = random.Random(1)
        room.receive(alice.client, protocol.create_update_message(alice.edit(rng, 0)))
        # Mallory builds the edit alice's document would make next, and sends it first.
        forged: Doc[Any] = Doc(client_id=alice.doc.client_id)
        forged.apply_update(alice.doc.get_update())
        before = forged.get_state()
        source: Text = forged.get("cells", type=Array)[0]["source"]
        source.insert(0, "forged")
        mallory = Outbox("m", 100, user_id="mallory", user_name="Mallory")
        room.join(mallory)
        with pytest.raises(ProtocolError, match="another collaborator"):
            room.receive(mallory, protocol.create_update_message(forged.get_update(before)))
        room.receive(alice.client, protocol.create_update_message(alice.edit(rng, 1)))
        await rooms.writer.flushed()
        assert "forged" not in "".join(texts(room.doc))
        assert "[alice:1]" in "".join(texts(room.doc))


async def test_edits_past_the_size_limits_are_refused(database_url: str):
    async with room_of(database_url) as (rooms, room, _pool):
        alice = Person("alice", room)
        alice.receive()
        room.limits = type(room.limits)(max_bytes=room.size + 50_000, max_cells=5)
        # Cells past the limit, in one update.
        before = alice.doc.get_state()
        cells = alice.doc.get("cells", type=Array)
        with alice.doc.transaction():
            for n in range(6):
                cells.append(Map({"id": f"c{n}", "source": Text("")}))
        with pytest.raises(ProtocolError, match="at most 5 cells"):
            room.receive(alice.client, protocol.create_update_message(alice.doc.get_update(before)))
        assert len(room.doc.get("cells", type=Array)) == 1
        # Bytes past the limit.
        big: Doc[Any] = Doc()
        big.apply_update(room.doc.get_update())
        before = big.get_state()
        source: Text = big.get("cells", type=Array)[0]["source"]
        source.insert(0, "x" * 60_000)
        with pytest.raises(ProtocolError, match="notebook is full"):
            room.receive(alice.client, protocol.create_update_message(big.get_update(before)))
        assert str(room.doc.get("cells", type=Array)[0]["source"]) == ""
        with anyio.fail_after(5):
            await rooms.writer.flushed()
