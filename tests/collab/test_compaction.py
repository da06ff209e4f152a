"""Compaction with several servers: a snapshot at seq S holds exactly the logged updates up to
S, and no update can ever be logged at or below the snapshot's seq, so documents converge
however compaction interleaves with concurrent writers on other servers."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
from pycrdt import Array, Doc, Map, Text, TransactionEvent

from collab.metrics import Metrics
from collab.settings import Settings
from collab.storage.catalog import Catalog
from collab.storage.database import open_pool
from collab.storage.document_store import DocumentStore
from collab.storage.fold import fold
from collab.sync.room_manager import RoomManager
from collab.sync.update_check import UpdateRefused, check_update, decode_state_vector
from tests.conftest import StartServer, new_notebook, token_of
from tests.support.loop_lag import loop_lag
from tests.support.nodeclient import NodeYClient, node_client

pytestmark = pytest.mark.anyio

# -- two real servers -----------------------------------------------------------------------

WRITERS_PER_NODE = 3
STAMPS = 60


def _stamps(text: str) -> set[str]:
    return set(re.findall(r"w\d+x\d+ ", text))


async def _wait_for_all(client: NodeYClient, expected: set[str], timeout: float) -> set[str]:
    """Wait until the client has every stamp, or time is up; returns what it lacks."""
    missing = expected
    with anyio.move_on_after(timeout):
        while missing:
            missing = expected - _stamps(await client.text())
            await anyio.sleep(0.2)
    return missing


async def test_two_servers_compacting_under_concurrent_writers_converge(
    start_server: StartServer, database_url: str
):
    env = {"WEFT_COMPACT_AFTER_UPDATES": "15", "WEFT_FEED_POLL_SECONDS": "0.5"}
    one, two = await start_server(**env), await start_server(**env)
    async with httpx.AsyncClient(base_url=one.url, headers=one.auth) as api:
        notebook_id = await new_notebook(api)
        token = token_of(api)
    bases = [one.ws_base, two.ws_base]
    expected = {f"w{w}x{n} " for w in range(2 * WRITERS_PER_NODE) for n in range(STAMPS)}
    async with contextlib.AsyncExitStack() as stack:
        writers = [
            await stack.enter_async_context(node_client(bases[w % 2], notebook_id, token=token))
            for w in range(2 * WRITERS_PER_NODE)
        ]
        async with anyio.create_task_group() as tg:
            for w, writer in enumerate(writers):

                async def type_stamps(writer: NodeYClient = writer, w: int = w) -> None:
                    await writer.call("type", prefix=f"w{w}x", count=STAMPS, interval=4, timeout=60)

                tg.start_soon(type_stamps)
        for w, writer in enumerate(writers):
            missing = await _wait_for_all(writer, expected, timeout=15)
            assert not missing, f"writer {w} (server {w % 2 + 1}) lacks {sorted(missing)}"
        final = await writers[0].text()
        for writer in writers[1:]:
            assert await writer.text() == final
    conn = await asyncpg.connect(database_url)
    try:
        snapshot_seq = await conn.fetchval(
            "SELECT seq FROM document_snapshots WHERE notebook_id = $1", uuid.UUID(notebook_id)
        )
        below = await conn.fetchval(
            "SELECT count(*) FROM document_updates WHERE notebook_id = $1 AND seq <= $2",
            uuid.UUID(notebook_id),
            snapshot_seq,
        )
    finally:
        await conn.close()
    assert snapshot_seq > 100, "the log was compacted while everyone wrote"
    assert below == 0, "rows at or below the snapshot are read by no load and no server"
    # A third server loads the document from the database alone: snapshot plus log.
    three = await start_server()
    async with node_client(three.ws_base, notebook_id, token=token) as fresh:
        assert await fresh.text() == final
    assert _stamps(final) == expected


# -- the store and the rooms service against the real database --------------------------------


async def _insert_notebook(pool: asyncpg.Pool) -> uuid.UUID:
    workspace_id, notebook_id = uuid.uuid4(), uuid.uuid4()
    seed: Doc[Any] = Doc(client_id=1)
    seed.get("t", type=Text).insert(0, "seed;")
    await pool.execute("INSERT INTO workspaces (id, name) VALUES ($1, 'ws')", workspace_id)
    await pool.execute(
        "INSERT INTO notebooks (id, workspace_id, title) VALUES ($1, $2, 'nb')",
        notebook_id,
        workspace_id,
    )
    await pool.execute(
        "INSERT INTO document_snapshots (notebook_id, seq, data) VALUES ($1, 0, $2)",
        notebook_id,
        seed.get_update(),
    )
    return notebook_id


@contextlib.asynccontextmanager
async def _node(settings: Settings) -> AsyncIterator[tuple[RoomManager, DocumentStore]]:
    """One server's document services (no feed: a node that has not heard from the others)."""
    async with open_pool(settings) as pool:
        store = DocumentStore(pool)
        async with RoomManager(settings, store, Catalog(pool), Metrics()) as rooms:
            yield rooms, store


def _edit(doc: Doc[Any], text: str) -> None:
    """A server-side edit (it is logged like a client's)."""
    ytext = doc.get("t", type=Text)
    ytext.insert(len(ytext), text)


def _recorded(doc: Doc[Any]) -> list[bytes]:
    """The updates of the doc's transactions from now on (not the empty ones)."""
    updates: list[bytes] = []

    def record(event: TransactionEvent) -> None:
        update = bytes(event.update)
        if update != b"\x00\x00":
            updates.append(update)

    doc.observe(record)
    return updates


async def _loaded_text(store: DocumentStore, notebook_id: uuid.UUID) -> str:
    doc: Doc[Any] = Doc()
    for update in (await store.load(notebook_id)).updates:
        doc.apply_update(update)
    return str(doc.get("t", type=Text))


async def _snapshot_seq(pool: asyncpg.Pool, notebook_id: uuid.UUID) -> int:
    seq: int = await pool.fetchval(
        "SELECT seq FROM document_snapshots WHERE notebook_id = $1", notebook_id
    )
    return seq


async def test_an_append_behind_a_compaction_is_renumbered_not_lost(database_url: str):
    """Server B numbers its update from a stale view of the log while server A appends and
    compacts past that seq: B's append must not land below the snapshot, where no load and
    no other server would ever read it."""
    settings = Settings(database_url=database_url, compact_after_updates=3)
    async with _node(settings) as (rooms_a, store), _node(settings) as (rooms_b, _):
        notebook_id = await _insert_notebook(store._pool)
        async with rooms_a.use(notebook_id) as room_a, rooms_b.use(notebook_id) as room_b:
            for n in range(4):
                _edit(room_a.doc, f"a{n};")
                await rooms_a.writer.flushed()
            with anyio.fail_after(10):
                while await _snapshot_seq(store._pool, notebook_id) < 3:
                    await anyio.sleep(0.02)
            # B has not heard of A's appends: it numbers its edit 1, a seq A compacted away.
            _edit(room_b.doc, "b;")
            await rooms_b.writer.flushed()
            assert room_b.durable_seq > await _snapshot_seq(store._pool, notebook_id)
        text = await _loaded_text(store, notebook_id)
    assert text.startswith("seed;")
    assert {"a0;", "a1;", "a2;", "a3;", "b;"} <= set(re.findall(r"\w+;", text))


async def test_an_append_waits_for_a_compaction_in_progress_then_is_refused(database_url: str):
    """The race itself: a compaction's transaction has moved the snapshot past seq 2 and
    deleted the rows but not committed; an append at seq 2 must not slip in after it."""
    settings = Settings(database_url=database_url)
    async with open_pool(settings) as pool:
        store = DocumentStore(pool)
        notebook_id = await _insert_notebook(pool)
        await store.append([(notebook_id, seq, b"\x00\x00") for seq in (1, 2, 3)])
        compactor = await asyncpg.connect(database_url)
        try:
            transaction = compactor.transaction()
            await transaction.start()
            await compactor.execute(
                "UPDATE document_snapshots SET seq = 3 WHERE notebook_id = $1", notebook_id
            )
            await compactor.execute(
                "DELETE FROM document_updates WHERE notebook_id = $1 AND seq <= 3", notebook_id
            )
            outcome: list[object] = []

            async def stale_append() -> None:
                outcome.append(await store.append([(notebook_id, 2, b"\x00\x00")]))

            async with anyio.create_task_group() as tg:
                tg.start_soon(stale_append)
                await anyio.sleep(0.3)
                assert not outcome, "the append must wait for the compaction"
                await transaction.commit()
        finally:
            await compactor.close()
        assert outcome == [{notebook_id}]
        assert await pool.fetchval("SELECT count(*) FROM document_updates") == 0


async def test_a_snapshot_holds_exactly_the_logged_updates_up_to_its_seq(database_url: str):
    """An edit accepted but not yet logged is in the live document; it must not be in a
    snapshot that claims a seq below the one it will be logged at (a server that applied
    that snapshot would let its clients build on an update the log has not ordered yet)."""
    settings = Settings(database_url=database_url, compact_after_updates=1_000_000)
    async with _node(settings) as (rooms, store):
        notebook_id = await _insert_notebook(store._pool)
        async with rooms.use(notebook_id) as room:
            _edit(room.doc, "logged;")
            await rooms.writer.flushed()
            _edit(room.doc, "not-yet;")  # pending: the writer has not taken it yet
            await rooms._compact(room)
            await rooms.writer.flushed()
        seq = await _snapshot_seq(store._pool, notebook_id)
        data = await store._pool.fetchval(
            "SELECT data FROM document_snapshots WHERE notebook_id = $1", notebook_id
        )
        assert seq == 1
        doc: Doc[Any] = Doc()
        doc.apply_update(data)
        assert str(doc.get("t", type=Text)) == "seed;logged;"
        assert await _loaded_text(store, notebook_id) == "seed;logged;not-yet;"


async def test_loading_stops_at_a_gap_and_the_poll_sees_a_compacted_head(database_url: str):
    """A row still in flight on another server leaves a gap: a load must stop there (the
    feed fills it in order), not skip it. And after a compaction that left no rows, the
    head the feed's poll compares with is the snapshot's seq."""
    settings = Settings(database_url=database_url)
    async with open_pool(settings) as pool:
        store = DocumentStore(pool)
        notebook_id = await _insert_notebook(pool)
        author: Doc[Any] = Doc(client_id=9)
        updates = _recorded(author)
        for part in ("x;", "y;", "z;", "w;"):
            _edit(author, part)
        await store.append([(notebook_id, seq, updates[seq - 1]) for seq in (1, 2, 4)])
        loaded = await store.load(notebook_id)
        assert (loaded.last_seq, len(loaded.updates)) == (2, 3)
        await store.append([(notebook_id, 3, updates[2])])
        assert (await store.load(notebook_id)).last_seq == 4
        assert await _loaded_text(store, notebook_id) == "seed;x;y;z;w;"
        compaction = await store.compact(notebook_id, upto=4)
        assert compaction is not None
        assert (compaction.seq, compaction.folded) == (4, 4)
        assert await pool.fetchval("SELECT count(*) FROM document_updates") == 0
        assert await store.heads([notebook_id]) == {notebook_id: 4}
        assert await _loaded_text(store, notebook_id) == "seed;x;y;z;w;"


def _large_notebook() -> bytes:
    """A notebook at the cell limit (2,000), each cell with outputs: one update."""
    doc: Doc[Any] = Doc(client_id=2)
    cells = doc.get("cells", type=Array)
    with doc.transaction():
        for i in range(2000):
            outputs = Array([Map({"output_type": "stream", "text": f"{j}\n"}) for j in range(40)])
            cells.append(Map({"id": f"c{i}", "source": Text("x = 1\n" * 5), "outputs": outputs}))
    return doc.get_update()


async def test_compacting_a_large_notebook_does_not_hold_the_event_loop(database_url: str):
    """Folding a large notebook's log takes the binding a tenth of a second or more; done on
    the event loop, it stalled every notebook the server holds. The fold runs in the
    document worker: the loop keeps turning meanwhile, and the snapshot is the same."""
    settings = Settings(database_url=database_url, compact_after_updates=1_000_000)
    async with _node(settings) as (rooms, store):
        notebook_id = await _insert_notebook(store._pool)
        author: Doc[Any] = Doc(client_id=5)
        for seed in (await store.load(notebook_id)).updates:
            author.apply_update(seed)
        updates = _recorded(author)
        author.apply_update(_large_notebook())
        for n in range(50):
            _edit(author, f"{n};")
        await store.append([(notebook_id, seq, u) for seq, u in enumerate(updates, start=1)])
        stored = await store.load(notebook_id)
        started = time.perf_counter()
        inline = fold(stored.updates)
        held = time.perf_counter() - started
        assert held > 0.05, f"the fold must be long enough to see ({held * 1000:.0f} ms)"

        async with rooms.use(notebook_id) as room:
            await rooms.doc_worker.fold([b"\x00\x00"])  # the worker started, as in a server
            async with loop_lag() as lag:
                await rooms._compact(room)
        assert await _snapshot_seq(store._pool, notebook_id) == len(updates)
        assert lag.max_seconds < held / 2, (
            f"the loop was held {lag.max_seconds * 1000:.0f} ms; "
            f"the fold alone takes {held * 1000:.0f} ms"
        )
        data = await store._pool.fetchval(
            "SELECT data FROM document_snapshots WHERE notebook_id = $1", notebook_id
        )
        folded: Doc[Any] = Doc()
        folded.apply_update(bytes(data))
        expected: Doc[Any] = Doc()
        expected.apply_update(inline)
        assert str(folded.get("t", type=Text)) == str(expected.get("t", type=Text))
        assert str(folded.get("t", type=Text)) == "seed;" + "".join(f"{n};" for n in range(50))
        assert len(folded.get("cells", type=Array)) == 2000


async def test_compacting_a_large_notebook_holds_the_appends_of_others_only_briefly(
    database_url: str,
):
    """Every append share-locks its notebooks' snapshot rows, and a writer's round carries
    every notebook's updates: while a compaction holds a large notebook's row, the rounds
    that also carry other notebooks' edits wait. PostgreSQL compressing and writing a 4 MB
    snapshot under that lock held them 133-175 ms; the snapshot is now written as a draft
    first, and the lock is held only to take it (15-42 ms)."""
    settings = Settings(database_url=database_url, compact_after_updates=1_000_000)
    async with _node(settings) as (rooms, store):
        large, other = await _insert_notebook(store._pool), await _insert_notebook(store._pool)
        author: Doc[Any] = Doc(client_id=5)
        for seed in (await store.load(large)).updates:
            author.apply_update(seed)
        updates = _recorded(author)
        author.apply_update(_large_notebook())
        _edit(author, "edited;")
        await store.append([(large, seq, u) for seq, u in enumerate(updates, start=1)])
        other_author: Doc[Any] = Doc(client_id=6)
        for seed in (await store.load(other)).updates:
            other_author.apply_update(seed)
        other_updates = _recorded(other_author)
        for n in range(2000):
            _edit(other_author, f"{n};")
        async with rooms.use(large) as room:
            await rooms.doc_worker.fold([b"\x00\x00"])  # the worker started, as in a server
            rounds: list[tuple[float, float]] = []
            done = anyio.Event()

            async def rounds_of_both() -> None:
                """Rounds that carry an update of each notebook, as a writer's do."""
                seqs = {large: len(updates), other: 0}
                while not done.is_set() and seqs[other] < len(other_updates):
                    seqs[large] += 1
                    seqs[other] += 1
                    began = time.perf_counter()
                    refused = await store.append(
                        [
                            # Above the compaction's seq; valid in both (one seed).
                            (large, seqs[large], other_updates[seqs[other] - 1]),
                            (other, seqs[other], other_updates[seqs[other] - 1]),
                        ]
                    )
                    assert not refused
                    rounds.append((began, time.perf_counter() - began))
                    await anyio.sleep(0.003)

            async with anyio.create_task_group() as tg:
                tg.start_soon(rounds_of_both)
                await anyio.sleep(0.5)
                began = time.perf_counter()
                await rooms._compact(room)
                ended = time.perf_counter()
                await anyio.sleep(0.2)
                done.set()
        assert await _snapshot_seq(store._pool, large) == len(updates)
        assert await store._pool.fetchval("SELECT count(*) FROM document_snapshot_drafts") == 0
        during = [took for at, took in rounds if began - 0.01 <= at <= ended]
        assert len(during) > 5, "rounds went on during the compaction"
        assert max(during) < 0.1, (
            f"a round waited {max(during) * 1000:.0f} ms for another notebook's compaction"
        )
        reloaded: Doc[Any] = Doc()
        for update in (await store.load(large)).updates:
            reloaded.apply_update(update)
        text = str(reloaded.get("t", type=Text))
        assert "edited;" in text
        assert text.count(";") == 2 + len([at for at, _ in rounds])
        assert len(reloaded.get("cells", type=Array)) == 2000


def test_an_update_before_its_dependency_is_parked_by_the_binding_and_refused_from_clients():
    """The binding (yrs) keeps an update whose dependencies are missing and integrates it
    once they arrive, as Yjs does. Such parked state is what hostile updates poisoned rooms
    with, so a room refuses it from clients (collab.sync.update_check); the log stays causal."""
    author: Doc[Any] = Doc(client_id=7)
    updates = _recorded(author)
    for part in ("one ", "two ", "three"):
        _edit(author, part)
    doc: Doc[Any] = Doc()
    doc.apply_update(updates[1])
    assert str(doc.get("t", type=Text)) == ""
    with pytest.raises(UpdateRefused, match="does not have"):
        check_update(updates[1], decode_state_vector(doc.get_state()))
    doc.apply_update(updates[0])
    doc.apply_update(updates[2])
    assert len(updates) == 3
    assert str(doc.get("t", type=Text)) == "one two three"
