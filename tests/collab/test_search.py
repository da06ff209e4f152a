"""Search as you type: what it finds, what it never shows, and how it stays current.

The query tests call ``collab.search.query.search`` against a migrated database with users,
workspaces and memberships inserted directly; the index tests run the services in process
(rooms, the indexer) or a real server with the official Yjs client typing.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
from pycrdt import Array, Doc, Text

from collab.document.cell_text import stored_cells
from collab.document.notebook import seed_update
from collab.metrics import Metrics
from collab.search.indexer import (
    IndexEntry,
    SearchIndexer,
    reindex_all,
    update_lexicon,
    write_entries,
)
from collab.search.query import (
    SEPARATOR,
    SearchResult,
    Term,
    query_terms,
    search,
    snippet,
)
from collab.settings import Settings
from collab.storage.catalog import Catalog
from collab.storage.database import migrate, open_pool
from collab.storage.document_store import DocumentStore
from collab.sync.replication import Replication
from collab.sync.room_manager import RoomManager
from tests.conftest import new_notebook, sign_up, token_of
from tests.support.loop_lag import loop_lag
from tests.support.nodeclient import node_client
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio

DATA = Path(__file__).parent / "data"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    await migrate(pool)
    yield pool
    await pool.close()


async def add_user(pool: asyncpg.Pool, name: str = "someone") -> uuid.UUID:
    user_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, 'x')",
        user_id,
        f"{user_id}@example.org",
        name,
    )
    return user_id


async def add_workspace(pool: asyncpg.Pool, name: str, *members: uuid.UUID) -> uuid.UUID:
    workspace_id = uuid.uuid4()
    await pool.execute("INSERT INTO workspaces (id, name) VALUES ($1, $2)", workspace_id, name)
    for user_id in members:
        await pool.execute(
            "INSERT INTO workspace_members (workspace_id, user_id, role) VALUES ($1, $2, 'editor')",
            workspace_id,
            user_id,
        )
    return workspace_id


async def add_notebook(
    pool: asyncpg.Pool, workspace_id: uuid.UUID, title: str, *cells: str, seq: int = 0
) -> uuid.UUID:
    """A notebook row (the trigger indexes its title) and its cells, written as the indexer
    writes them."""
    notebook_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO notebooks (id, workspace_id, title) VALUES ($1, $2, $3)",
        notebook_id,
        workspace_id,
        title,
    )
    ids = [f"cell-{n}" for n in range(len(cells))]
    assert await write_entries(pool, [IndexEntry(notebook_id, ids, list(cells), seq)]) == set()
    await update_lexicon(pool)
    return notebook_id


def titles(results: list[SearchResult]) -> list[str]:
    return [r.title for r in results]


# -- finding ----------------------------------------------------------------------------


@pytest.fixture
async def team(pool: asyncpg.Pool) -> dict[str, uuid.UUID]:
    """A user in workspace "Analytics", with a few notebooks of data work."""
    user = await add_user(pool, "ada")
    ws = await add_workspace(pool, "Analytics", user)
    ids = {
        "user": user,
        "workspace": ws,
        "sales": await add_notebook(
            pool,
            ws,
            "Quarterly revenue",
            "# Revenue by region\nWhere the money comes from.",
            'import pandas as pd\nsales = pd.read_csv("sales.csv")',
            'by_region = sales.groupby("region")["revenue"].sum()\nby_region.plot.bar()',
        ),
        "sensors": await add_notebook(
            pool,
            ws,
            "Sensor cleanup",
            "readings = load_readings()\nreadings = readings.dropna()",
            "## Temperature drift\nThe thermometer drifts after calibration.",
        ),
        "empty": await add_notebook(pool, ws, "Scratchpad", ""),
    }
    return ids


async def test_finds_a_word_in_a_cell(pool: asyncpg.Pool, team: dict[str, uuid.UUID]) -> None:
    results = await search(pool, team["user"], "groupby")
    assert [r.notebook_id for r in results] == [team["sales"]]
    best = results[0]
    assert best.workspace_id == team["workspace"]
    assert best.workspace_name == "Analytics"
    assert best.title == "Quarterly revenue"
    # The snippet is the matching line of the matching cell, with the word highlighted.
    assert best.cell_id == "cell-2"
    assert best.snippet == 'by_region = sales.groupby("region")["revenue"].sum()'
    assert [best.snippet[s:e] for s, e in best.highlights] == ["groupby"]
    # Code punctuation does not glue words together: "df.groupby" style queries work too.
    assert titles(await search(pool, team["user"], "sales.groupby")) == ["Quarterly revenue"]
    assert titles(await search(pool, team["user"], "thermometer")) == ["Sensor cleanup"]


async def test_finds_by_prefix_while_typing(pool: asyncpg.Pool, team: dict[str, uuid.UUID]) -> None:
    for typed in ("th", "the", "ther", "thermo", "thermomete"):
        found = await search(pool, team["user"], typed)
        assert "Sensor cleanup" in titles(found), typed
    results = await search(pool, team["user"], "calib")
    assert titles(results) == ["Sensor cleanup"]
    assert results[0].snippet == "The thermometer drifts after calibration."
    assert [results[0].snippet[s:e] for s, e in results[0].highlights] == ["calibration"]
    # Every word must match; the last one may be unfinished.
    assert titles(await search(pool, team["user"], "pandas read_c")) == ["Quarterly revenue"]
    assert await search(pool, team["user"], "pandas thermo") == []


async def test_finds_a_word_with_one_typo(pool: asyncpg.Pool, team: dict[str, uuid.UUID]) -> None:
    for typo in ("gropby", "groupyb", "thermometr", "calibraton", "tempreature", "pnadas"):
        results = await search(pool, team["user"], typo)
        assert results, typo
    assert titles(await search(pool, team["user"], "gropby")) == ["Quarterly revenue"]
    results = await search(pool, team["user"], "thermometr")
    assert titles(results) == ["Sensor cleanup"]
    assert [results[0].snippet[s:e] for s, e in results[0].highlights] == ["thermometer"]
    # Nothing close enough: nothing found (no wild guesses).
    assert await search(pool, team["user"], "zyxwvut") == []
    # A correction keeps the start or the end of what was typed: two edits, one at each end,
    # are too far to guess.
    assert await search(pool, team["user"], "xhermometex") == []


async def test_finds_by_title(pool: asyncpg.Pool, team: dict[str, uuid.UUID]) -> None:
    assert titles(await search(pool, team["user"], "quarterly")) == ["Quarterly revenue"]
    assert titles(await search(pool, team["user"], "scratchpad")) == ["Scratchpad"]
    assert titles(await search(pool, team["user"], "scratchpd")) == ["Scratchpad"]
    # One letter: titles only (a one-letter prefix of cell text would match everything).
    found = await search(pool, team["user"], "s")
    assert set(titles(found)) == {"Scratchpad", "Sensor cleanup"}
    assert all(r.highlights == [] for r in found)
    # Title words outrank the same word in cells.
    await add_notebook(pool, team["workspace"], "Notes", "the revenue is up, revenue!")
    assert titles(await search(pool, team["user"], "revenue"))[0] == "Quarterly revenue"


async def test_exact_words_rank_above_prefixes_and_typos(pool: asyncpg.Pool) -> None:
    user = await add_user(pool)
    ws = await add_workspace(pool, "W", user)
    await add_notebook(pool, ws, "One", "plotting the plots")
    await add_notebook(pool, ws, "Two", "a plot")
    assert titles(await search(pool, user, "plot")) == ["Two", "One"]
    await add_notebook(pool, ws, "Three", "histogram")
    await add_notebook(pool, ws, "Four", "histograms")
    # Both are one or two edits away; the closer one ranks first.
    assert titles(await search(pool, user, "histogrm")) == ["Three", "Four"]
    assert titles(await search(pool, user, "histograms")) == ["Four"]


async def test_empty_and_punctuation_queries_find_nothing(
    pool: asyncpg.Pool, team: dict[str, uuid.UUID]
) -> None:
    for query in ("", "   ", "...", "()[]", "'", "\\", "&|!:*"):
        assert await search(pool, team["user"], query) == [], query
    # Quotes and tsquery syntax inside words are just separators.
    assert titles(await search(pool, team["user"], "'groupby' & !")) == ["Quarterly revenue"]


async def test_limit(pool: asyncpg.Pool, team: dict[str, uuid.UUID]) -> None:
    for n in range(30):
        await add_notebook(pool, team["workspace"], f"Copy {n}", f"quokka number {n}")
    assert len(await search(pool, team["user"], "quokka")) == 20
    assert len(await search(pool, team["user"], "quokka", limit=5)) == 5
    assert len(await search(pool, team["user"], "quokka", limit=50)) == 30


# -- visibility -------------------------------------------------------------------------


async def test_never_returns_a_notebook_of_a_workspace_the_user_is_not_in(
    pool: asyncpg.Pool,
) -> None:
    ada, bob, eve = [await add_user(pool, n) for n in ("ada", "bob", "eve")]
    ours = await add_workspace(pool, "Ours", ada, bob)
    theirs = await add_workspace(pool, "Theirs", bob)
    mine = await add_notebook(pool, ours, "Budget", "forecast = budget.rolling(3).mean()")
    # Theirs matches better (title, more words) and holds words of its own.
    secret = await add_notebook(
        pool, theirs, "Forecast budget", "forecast forecast budget\nsecret_merger_plan = 1"
    )
    for query in ("forecast", "forec", "forecats", "budget", "rolling mean"):
        assert [r.notebook_id for r in await search(pool, ada, query)] == [mine], query
    # Words only the other workspace holds find nothing, exactly or with a typo.
    for query in ("merger", "secret", "mergr", "Forecast budget secret"):
        assert await search(pool, ada, query) == [], query
    # Bob is in both; Eve in none.
    assert {r.notebook_id for r in await search(pool, bob, "forecast")} == {mine, secret}
    assert await search(pool, eve, "forecast") == []
    # A grant on one notebook shows that notebook, and nothing else of its workspace.
    other = await add_notebook(pool, theirs, "Also theirs", "forecast again")
    await pool.execute(
        "INSERT INTO notebook_grants (notebook_id, user_id, role) VALUES ($1, $2, 'viewer')",
        secret,
        eve,
    )
    assert [r.notebook_id for r in await search(pool, eve, "forecast")] == [secret]
    # Leaving a workspace hides it at once.
    await pool.execute("DELETE FROM workspace_members WHERE user_id = $1", bob)
    assert await search(pool, bob, "forecast") == []
    assert other not in {r.notebook_id for r in await search(pool, ada, "again")}


async def test_a_guest_sees_only_what_their_link_covers(pool: asyncpg.Pool) -> None:
    ada = await add_user(pool, "ada")
    shared = await add_workspace(pool, "Shared", ada)
    elsewhere = await add_workspace(pool, "Elsewhere", ada)
    first = await add_notebook(pool, shared, "First", "telescope data")
    second = await add_notebook(pool, shared, "Second", "telescope again")
    await add_notebook(pool, elsewhere, "Third", "telescope too")
    guest = uuid.uuid4()
    await pool.execute("INSERT INTO users (id, name, guest) VALUES ($1, 'guest', true)", guest)
    # A workspace link: that workspace's notebooks.
    found = await search(pool, guest, "telescope", workspace_scope=shared)
    assert {r.notebook_id for r in found} == {first, second}
    # A notebook link: that notebook.
    found = await search(pool, guest, "telescope", workspace_scope=shared, notebook_scope=second)
    assert [r.notebook_id for r in found] == [second]
    # Without a scope, a guest with no membership sees nothing.
    assert await search(pool, guest, "telescope") == []
    # The scope confines a member too.
    found = await search(pool, ada, "telescope", workspace_scope=shared, notebook_scope=first)
    assert [r.notebook_id for r in found] == [first]


# Issue 11, item 3: a word of a notebook the caller cannot see must change nothing they get.
# The attack: the caller plants words of their own one edit away from each prefix they try
# (starting with another letter, so none starts with the prefix), then types the prefixes:
# a typo match on their own word appears only while no word they cannot see starts with
# the prefix, which spells out the other tenant's word letter by letter.
SECRET = "kraqenfolt"
# What the private notebook holds instead in the control run: nothing near any probe.
NOT_SECRET = "plimsoverd"


def planted(first: str) -> str:
    """One word per probed prefix of SECRET, one edit away from it (its first letter)."""
    return " ".join(first + SECRET[1:k] for k in range(4, len(SECRET) + 1))


def probes() -> list[str]:
    """Prefixes of SECRET, SECRET with one or two typos, and with another word."""
    found = [SECRET[:k] for k in range(2, len(SECRET) + 1)]
    for i in range(1, len(SECRET)):
        found.append(SECRET[:i] + "x" + SECRET[i + 1 :])  # substitution
        found.append(SECRET[:i] + SECRET[i + 1 :])  # deletion
        found.append(SECRET[:i] + "e" + SECRET[i:])  # insertion
        if i + 1 < len(SECRET):
            found.append(SECRET[:i] + SECRET[i + 1] + SECRET[i] + SECRET[i + 2 :])  # swap
    found += [SECRET[:k] + "zz" for k in (4, 6, 8)]  # two edits beyond a prefix
    found += [f"budget {SECRET[:k]}" for k in (4, 6, 10)]
    found += [f"{SECRET[:6]}x budget", SECRET.upper(), f"{SECRET} {SECRET[:5]}"]
    return list(dict.fromkeys(found))


@pytest.mark.parametrize("where", ["beside a granted notebook", "in another workspace"])
async def test_words_the_caller_cannot_see_change_nothing_they_get(
    pool: asyncpg.Pool, where: str
) -> None:
    """Tenant A (ada, with a grant on one notebook of B's workspace; and a guest with a link
    to that notebook) probes prefixes and typos of a word in a notebook of B they cannot
    see. Every answer (results, their order, scores, snippets, highlights, an error) must
    be the same whether that notebook holds the word, another word, or is gone."""
    ada, bob = await add_user(pool, "ada"), await add_user(pool, "bob")
    ours = await add_workspace(pool, "A", ada)
    theirs = await add_workspace(pool, "B", bob)
    await add_notebook(pool, ours, "Probe", planted("x"), "budget = 1")
    await add_notebook(pool, ours, "Budget", "budget forecast; budget review")
    await add_notebook(pool, ours, "Near miss", "krawl krane kraken " + SECRET[:3])
    # B shares one notebook (with words planted the same way) with ada and by a link.
    shared = await add_notebook(pool, theirs, "Shared", planted("y"), "budget notes")
    await pool.execute(
        "INSERT INTO notebook_grants (notebook_id, user_id, role) VALUES ($1, $2, 'viewer')",
        shared,
        ada,
    )
    guest = uuid.uuid4()
    await pool.execute("INSERT INTO users (id, name, guest) VALUES ($1, 'guest', true)", guest)
    home = theirs if where == "beside a granted notebook" else await add_workspace(pool, "C", bob)
    private = await add_notebook(pool, home, "Private", f"password = '{SECRET}'")
    # Who asks, and the scope of their share link (none for ada).
    callers: dict[str, tuple[uuid.UUID, uuid.UUID | None, uuid.UUID | None]] = {
        "ada": (ada, None, None),
        "guest": (guest, theirs, shared),
    }

    async def answers() -> dict[tuple[str, str], object]:
        """(caller, query) -> the results as the API shows them (or the error), and the
        words searched for with their typo candidates (what decides the work done)."""
        got: dict[tuple[str, str], object] = {}
        for caller, (user, in_workspace, in_notebook) in callers.items():
            for query in probes():
                try:
                    found = await search(pool, user, query, 20, in_workspace, in_notebook)
                    terms = await query_terms(pool, user, query, in_workspace, in_notebook)
                    got[caller, query] = ([r.to_json() for r in found], terms)
                except Exception as error:  # an error is an answer too
                    got[caller, query] = ("error", type(error).__name__, str(error))
        return got

    with_secret = await answers()
    # (The secret is indexed: its owner finds it, by prefix and by typo.)
    assert titles(await search(pool, bob, SECRET[:5])) == ["Private"]
    assert titles(await search(pool, bob, SECRET[:-1] + "x"))[0] == "Private"
    await write_entries(pool, [IndexEntry(private, ["cell-0"], [f"x = '{NOT_SECRET}'"], 1)])
    await update_lexicon(pool)
    another_word = await answers()
    await pool.execute("DELETE FROM notebooks WHERE id = $1", private)
    await update_lexicon(pool)
    gone = await answers()
    # The probe is fair: without the secret, the planted words are found through typos.
    assert set(titles(await search(pool, ada, SECRET[:6]))) == {"Probe", "Shared", "Near miss"}
    assert titles(await search(pool, guest, SECRET[:6], 20, theirs, shared)) == ["Shared"]
    differ = [key for key, answer in with_secret.items() if answer != gone[key]]
    assert differ == [], f"{len(differ)} of {len(gone)} answers tell the secret: {differ[:8]}"
    assert with_secret == another_word == gone


# -- the index itself -------------------------------------------------------------------


async def lexicon(pool: asyncpg.Pool) -> dict[str, int]:
    """Every word of every workspace's lexicon, with its notebooks (summed)."""
    records = await pool.fetch(
        "SELECT word, sum(notebooks)::int AS notebooks FROM search_words GROUP BY word"
    )
    return {r["word"]: r["notebooks"] for r in records}


Lexicons = dict[tuple[uuid.UUID, str], int]


async def lexicons(pool: asyncpg.Pool) -> Lexicons:
    records = await pool.fetch("SELECT * FROM search_words")
    return {(r["workspace_id"], r["word"]): r["notebooks"] for r in records}


async def lexicons_recomputed(pool: asyncpg.Pool) -> Lexicons:
    records = await pool.fetch(
        "SELECT workspace_id, w AS word, count(*)::int AS notebooks"
        " FROM notebook_search, unnest(search_lexicon(tsv)) AS w GROUP BY workspace_id, w"
    )
    return {(r["workspace_id"], r["word"]): r["notebooks"] for r in records}


async def test_titles_follow_renames_and_rows_go_with_their_notebook(
    pool: asyncpg.Pool, team: dict[str, uuid.UUID]
) -> None:
    user = team["user"]
    await pool.execute("UPDATE notebooks SET title = 'Yearly takings' WHERE id = $1", team["sales"])
    assert titles(await search(pool, user, "takings")) == ["Yearly takings"]
    assert await search(pool, user, "quarterly") == []
    await pool.execute("DELETE FROM notebooks WHERE id = $1", team["sensors"])
    assert await search(pool, user, "thermometer") == []
    await update_lexicon(pool)
    assert await lexicons(pool) == await lexicons_recomputed(pool)
    assert "thermometer" not in await lexicon(pool)
    await pool.execute("DELETE FROM workspaces")
    assert await pool.fetchval("SELECT count(*) FROM notebook_search") == 0
    await update_lexicon(pool)
    assert await lexicon(pool) == {}


async def test_lexicon_counts_follow_every_change(
    pool: asyncpg.Pool, team: dict[str, uuid.UUID]
) -> None:
    ws, sales = team["workspace"], team["sales"]
    await add_notebook(pool, ws, "Another", "revenue forecast")
    assert (await lexicon(pool))["revenue"] == 2
    await write_entries(pool, [IndexEntry(sales, ["a"], ["walrus"], 1)])
    await update_lexicon(pool)
    words = await lexicon(pool)
    assert words["walrus"] == 1
    assert words["revenue"] == 2  # still in the title of "Quarterly revenue"
    assert "groupby" not in words
    assert await lexicons(pool) == await lexicons_recomputed(pool)
    # Each workspace counts its own notebooks; a notebook that moves takes its words along.
    elsewhere = await add_workspace(pool, "Elsewhere")
    await pool.execute("UPDATE notebooks SET workspace_id = $1 WHERE id = $2", elsewhere, sales)
    await update_lexicon(pool)
    assert (await lexicons(pool))[elsewhere, "walrus"] == 1
    assert (ws, "walrus") not in await lexicons(pool)
    assert await lexicons(pool) == await lexicons_recomputed(pool)


async def test_a_write_from_an_older_document_never_replaces_a_newer_one(
    pool: asyncpg.Pool, team: dict[str, uuid.UUID]
) -> None:
    sales = team["sales"]
    await write_entries(pool, [IndexEntry(sales, ["a"], ["newer text"], 7)])
    await write_entries(pool, [IndexEntry(sales, ["a"], ["older text"], 5)])
    row = await pool.fetchrow(
        "SELECT body, indexed_seq FROM notebook_search WHERE notebook_id = $1", sales
    )
    assert (row["body"], row["indexed_seq"]) == ("newer text", 7)
    # A notebook deleted meanwhile is skipped, not an error.
    assert await write_entries(pool, [IndexEntry(uuid.uuid4(), [], ["ghost"], 1)]) == set()


async def test_the_indexer_never_waits_for_a_row_lock(
    pool: asyncpg.Pool, team: dict[str, uuid.UUID]
) -> None:
    """A rename (or a delete) holding a row: the indexer skips that row and says so, and the
    lexicon leaves it for later, instead of waiting (and maybe deadlocking) with it."""
    sales, sensors = team["sales"], team["sensors"]
    async with pool.acquire() as other, other.transaction():
        await other.execute("UPDATE notebooks SET title = 'Held' WHERE id = $1", sales)
        with anyio.fail_after(2):
            busy = await write_entries(
                pool,
                [
                    IndexEntry(sales, ["a"], ["lemur"], 9),
                    IndexEntry(sensors, ["a"], ["gibbon"], 9),
                ],
            )
            assert busy == {sales}
            await update_lexicon(pool)
        assert "gibbon" in await lexicon(pool)
    assert await write_entries(pool, [IndexEntry(sales, ["a"], ["lemur"], 9)]) == set()
    await update_lexicon(pool)
    assert titles(await search(pool, team["user"], "lemur")) == ["Held"]
    assert await lexicons(pool) == await lexicons_recomputed(pool)


def test_snippet_is_one_line_around_the_match_with_highlights() -> None:
    long_line = "x = " + " + ".join(f"term{n}" for n in range(80)) + " + walrus_size"
    body = SEPARATOR.join(["nothing here", "first line\n    " + long_line + "\nlast"])
    cell_id, text, highlights = snippet(body, ["c0", "c1"], [Term("walrus")])
    assert cell_id == "c1"
    assert len(text) <= 162
    assert text.startswith("…")
    assert [text[s:e] for s, e in highlights] == ["walrus"]
    # The cell that matches more of the words wins; then exact words.
    body = SEPARATOR.join(["alpha", "alpha beta", "alphabet beta"])
    assert snippet(body, ["a", "b", "c"], [Term("alpha"), Term("beta")])[0] == "b"
    # No cell matches (a title match): the first line with text.
    assert snippet(SEPARATOR.join(["", "  \n  hello  "]), ["a", "b"], [Term("zzz")]) == (
        "b",
        "hello",
        [],
    )


# -- keeping it current: in process -----------------------------------------------------


@dataclass
class InProcess:
    pool: asyncpg.Pool
    catalog: Catalog
    store: DocumentStore
    rooms: RoomManager
    indexer: SearchIndexer


@contextlib.asynccontextmanager
async def services_for(database_url: str, tmp_path: Path) -> AsyncIterator[InProcess]:
    """What the indexer works with, as the server's services build it (rooms unload 0.2 s
    after their last user)."""
    settings = Settings(state_dir=tmp_path, database_url=database_url, room_grace_seconds=0.2)
    async with contextlib.AsyncExitStack() as stack:
        pool = await stack.enter_async_context(open_pool(settings))
        catalog, store = Catalog(pool), DocumentStore(pool)
        rooms = await stack.enter_async_context(RoomManager(settings, store, catalog, Metrics()))
        indexer = await stack.enter_async_context(SearchIndexer(pool, store, rooms))
        yield InProcess(pool, catalog, store, rooms, indexer)


async def eventually(
    probe: Callable[[], Awaitable[bool]], timeout: float = 5.0, what: str = "condition"
) -> float:
    """Seconds until ``probe()`` holds; fails after ``timeout``."""
    started = anyio.current_time()
    while not await probe():
        if anyio.current_time() - started > timeout:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await anyio.sleep(0.05)
    return anyio.current_time() - started


async def seeded_notebook(services: InProcess, workspace_id: uuid.UUID, *sources: str) -> uuid.UUID:
    notebook_id = uuid.uuid4()
    notebook = {"metadata": {}, "cells": [{"cell_type": "code", "source": s} for s in sources]}
    await services.catalog.create_notebook(
        workspace_id, notebook_id, "Seeded", seed_update(notebook, notebook_id)
    )
    return notebook_id


def type_into(room_doc: Doc[Any], text: str) -> None:
    source: Text = room_doc.get("cells", type=Array)[0]["source"]
    source.insert(len(source), text)


async def test_server_side_edits_are_indexed_even_when_the_room_unloads_first(
    database_url: str, tmp_path: Path
) -> None:
    async with services_for(database_url, tmp_path) as services:
        pool = services.pool
        user = await add_user(pool)
        ws = await add_workspace(pool, "W", user)
        notebook_id = await seeded_notebook(services, ws, "print('hello')")
        # New notebooks are indexed from the store within a second.
        await eventually(lambda: found(pool, user, "hello"), what="indexing a new notebook")
        async with services.rooms.use(notebook_id) as room:
            type_into(room.doc, "\nnarwhal = 1")
        # The room unloads 0.2 s after its last user left, before the indexer's delay: the
        # indexer holds the room and still writes what it had.
        await eventually(lambda: unloaded(services, notebook_id), what="unloading")
        waited = await eventually(lambda: found(pool, user, "narwhal"), what="indexing")
        assert waited < 2.5


async def append_from_another_server(
    store: DocumentStore, notebook_id: uuid.UUID, text: str
) -> None:
    """An edit typed into the first cell, appended to the log as another server would (no
    room here sees it being made)."""
    doc: Doc[Any] = Doc()
    for update in (await store.load(notebook_id)).updates:
        doc.apply_update(update)
    before = doc.get_state()
    type_into(doc, text)
    seq = await store.last_seq(notebook_id) + 1
    await store.append([(notebook_id, seq, doc.get_update(before))])


async def found(pool: asyncpg.Pool, user: uuid.UUID, query: str) -> bool:
    return bool(await search(pool, user, query))


async def unloaded(services: InProcess, notebook_id: uuid.UUID) -> bool:
    return services.rooms.loaded(notebook_id) is None


async def test_sweep_catches_edits_no_server_indexed_and_reindex_rebuilds_everything(
    database_url: str, tmp_path: Path
) -> None:
    async with services_for(database_url, tmp_path) as services:
        pool, store = services.pool, services.store
        user = await add_user(pool)
        ws = await add_workspace(pool, "W", user)
        notebook_id = await seeded_notebook(services, ws, "alpha = 1")
        await eventually(lambda: found(pool, user, "alpha"), what="indexing a new notebook")
        # Another server logged an edit and died before indexing it.
        await append_from_another_server(store, notebook_id, "\nplatypus = 2")
        assert not await found(pool, user, "platypus")
        # (The indexer's own loop may hold the catch-up lock for a moment: then it is 0.)
        swept = 0

        async def sweep() -> bool:
            nonlocal swept
            swept += await services.indexer.catch_up(grace_seconds=0)
            return swept > 0

        await eventually(sweep, what="the sweep")
        assert swept == 1
        assert await found(pool, user, "platypus")
        assert await services.indexer.catch_up(grace_seconds=0) == 0  # nothing left behind
        # Wipe the index; a full rebuild restores it, lexicon included.
        await pool.execute("UPDATE notebook_search SET body = '', indexed_seq = 0")
        await pool.execute("DELETE FROM search_words")
        assert not await found(pool, user, "platypus")
        assert await reindex_all(pool, store, services.rooms) == 1
        assert await found(pool, user, "platypus")
        assert await found(pool, user, "platypsu")  # the lexicon is back: typos work
        assert await lexicons(pool) == await lexicons_recomputed(pool)


def _large_notebook(notebook_id: uuid.UUID, last_word: str) -> bytes:
    """2,000 cells (the limit) with outputs, as one seed update; the last cell's source
    holds ``last_word``."""
    cells: list[Any] = [
        {
            "cell_type": "code",
            "source": f"x{i} = {i}\n" * 5,
            "outputs": [
                {"output_type": "stream", "name": "stdout", "text": f"{j}\n"} for j in range(20)
            ],
        }
        for i in range(1999)
    ]
    cells.append({"cell_type": "code", "source": f"{last_word} = 1"})
    return seed_update({"metadata": {}, "cells": cells}, notebook_id)


async def test_a_large_stored_notebook_is_read_for_the_index_off_the_event_loop(
    database_url: str, tmp_path: Path
) -> None:
    """A notebook that is not loaded (new, imported, or changed by a server that died) is
    indexed from the store: applying a large one takes the binding a tenth of a second or
    more, which on the event loop stalled every notebook the server holds. It is read in
    the document worker: the loop keeps turning, and the text is the same."""
    async with services_for(database_url, tmp_path) as services:
        pool = services.pool
        user = await add_user(pool)
        ws = await add_workspace(pool, "W", user)
        notebook_id = uuid.uuid4()
        seed = _large_notebook(notebook_id, "narwhal")
        started = time.perf_counter()
        ids, sources = stored_cells([seed])
        held = time.perf_counter() - started
        assert len(ids) == 2000
        assert sources[-1] == "narwhal = 1"
        assert held > 0.05, f"the read must be long enough to see ({held * 1000:.0f} ms)"
        await services.rooms.doc_worker.start()  # as in a server: started with the rooms

        async with loop_lag() as lag:
            await services.catalog.create_notebook(ws, notebook_id, "Large", seed)
            # New notebooks are indexed from the store within poll_seconds (1 s).
            await eventually(lambda: found(pool, user, "narwhal"), what="indexing it")
        assert await found(pool, user, "x1998")
        assert lag.max_seconds < held / 2, (
            f"the loop was held {lag.max_seconds * 1000:.0f} ms; reading the notebook takes "
            f"{held * 1000:.0f} ms"
        )
        assert services.rooms.loaded(notebook_id) is None  # read, never loaded as a room


async def test_an_unreadable_stored_notebook_is_found_by_its_title_and_the_rest_go_on(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The log holds only checked updates, but a stored document the binding cannot read
    (a damaged row) costs that notebook its cells in the index, nothing more: it is still
    found by its title, the indexer's worker reads the next notebook, and the server logs
    which notebook it was."""
    caplog.set_level(logging.WARNING, logger="collab.search.indexer")
    async with services_for(database_url, tmp_path) as services:
        pool, store = services.pool, services.store
        user = await add_user(pool)
        ws = await add_workspace(pool, "W", user)
        damaged = uuid.uuid4()
        await services.catalog.create_notebook(
            ws, damaged, "Walrus notes", seed_update({"metadata": {}, "cells": []}, damaged)
        )
        await store.append([(damaged, 1, b"\x01\xff\xff\xff\xff\x0f")])
        healthy = await seeded_notebook(services, ws, "platypus = 1")

        async def swept() -> bool:
            await services.indexer.catch_up(grace_seconds=0)
            return await found(pool, user, "platypus") and await found(pool, user, "walrus")

        await eventually(swept, what="indexing both notebooks")
        unreadable = [
            r
            for r in caplog.records
            if r.getMessage() == "search: stored document is unreadable; indexed without its cells"
        ]
        assert unreadable
        assert unreadable[0].notebook_id == str(damaged)  # type: ignore[attr-defined]
        assert str(healthy) not in {r.notebook_id for r in unreadable}  # type: ignore[attr-defined]


async def test_an_edit_another_server_made_to_a_loaded_room_is_indexed_within_the_delay(
    database_url: str, tmp_path: Path
) -> None:
    # Nothing observes the room's document: the indexer learns of changes from the room
    # hooks. An update another server appended reaches this server's room through
    # replication's catch-up (log_applied), not through this server's writer.
    async with services_for(database_url, tmp_path) as services:
        pool, store = services.pool, services.store
        user = await add_user(pool)
        ws = await add_workspace(pool, "W", user)
        notebook_id = await seeded_notebook(services, ws, "alpha = 1")
        await eventually(lambda: found(pool, user, "alpha"), what="indexing a new notebook")
        replication = Replication(pool, store, services.rooms, Metrics(), poll_seconds=60)
        async with services.rooms.use(notebook_id) as room, replication:
            # Loading the room marks it due (room_loaded): let that pass (its delay is 1 s;
            # the row is unchanged, so nothing in the database shows it) before the edit.
            await anyio.sleep(1.5)
            await append_from_another_server(store, notebook_id, "\nquokka = 3")
            await replication.catch_up(notebook_id)
            assert "quokka" in str(room.doc.get("cells", type=Array)[0]["source"])
            # The sweep is 60 s away: only the hook can have marked it due.
            waited = await eventually(lambda: found(pool, user, "quokka"), what="indexing")
            assert waited < 2.5


# -- keeping it current: a real server and the official Yjs client ------------------------


async def api_search(api: httpx.AsyncClient, query: str) -> list[dict[str, object]]:
    response = await api.get("/api/search", params={"q": query})
    assert response.status_code == 200, response.text
    results: list[dict[str, object]] = response.json()["results"]
    return results


async def test_a_live_edit_through_a_yjs_client_is_found_within_two_seconds(
    server: ServerProcess, api: httpx.AsyncClient
) -> None:
    notebook_id = await new_notebook(api, "Field notes")
    # The title is searchable as soon as the notebook exists.
    assert [r["notebook_id"] for r in await api_search(api, "field notes")] == [notebook_id]
    async with node_client(server.ws_base, notebook_id, token=token_of(api)) as client:
        await client.call("insert", text="sightings = count_axolotl(pond)")
        started = anyio.current_time()

        async def indexed() -> bool:
            return bool(await api_search(api, "axolotl"))

        # Delay 1 s, plus a write: "within 2 s of the last edit" with room to spare.
        assert await eventually(indexed, timeout=4, what="indexing the edit") < 2.5
        assert anyio.current_time() - started < 2.5
        (result,) = await api_search(api, "axolot")  # still typing
        assert result["notebook_id"] == notebook_id
        assert result["title"] == "Field notes"
        assert result["workspace_name"] == "ws"
        assert result["snippet"] == "sightings = count_axolotl(pond)"
        assert result["highlights"] == [[18, 25]]

        # A typo needs the workspace's lexicon, which follows within another second.
        async def corrected() -> bool:
            found = await api_search(api, "axolotol")
            return [r["notebook_id"] for r in found] == [notebook_id]

        await eventually(corrected, timeout=3, what="correcting the typo")
        # Deleting the word takes it out of the index again.
        await client.call("delete", index=0, length=len("sightings = count_axolotl(pond)"))

        async def gone() -> bool:
            return not await api_search(api, "axolotl")

        await eventually(gone, timeout=4, what="removing the deleted word")


async def test_imported_and_renamed_notebooks_are_found(
    server: ServerProcess, api: httpx.AsyncClient
) -> None:
    workspace = (await api.post("/api/workspaces", json={"name": "Imports"})).json()
    response = await api.post(
        f"/api/workspaces/{workspace['id']}/notebooks/import",
        content=(DATA / "sales.ipynb").read_bytes(),
    )
    assert response.status_code == 201, response.text
    notebook_id = response.json()["id"]

    async def indexed() -> bool:
        return bool(await api_search(api, "read_csv"))

    await eventually(indexed, timeout=5, what="indexing the import")
    (result,) = await api_search(api, "pd.read_csv")
    assert result["notebook_id"] == notebook_id
    assert result["workspace_name"] == "Imports"
    assert result["snippet"] == 'sales = pd.read_csv("sales.csv")'
    response = await api.patch(f"/api/notebooks/{notebook_id}", json={"title": "Ledger"})
    assert response.status_code == 200, response.text
    assert [r["title"] for r in await api_search(api, "ledger")] == ["Ledger"]


async def test_the_endpoint_checks_its_caller_and_arguments(
    server: ServerProcess, api: httpx.AsyncClient
) -> None:
    workspace = (await api.post("/api/workspaces", json={"name": "Private"})).json()
    notebook = (
        await api.post(f"/api/workspaces/{workspace['id']}/notebooks", json={"title": "Pelican"})
    ).json()
    await api.post(f"/api/workspaces/{workspace['id']}/notebooks", json={"title": "Pelican two"})
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as anonymous:
        response = await anonymous.get("/api/search", params={"q": "pelican"})
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        # Someone else, signed in: not a member, so nothing.
        other = await sign_up(server.url, "other@example.org", "Otto")
        response = await anonymous.get(
            "/api/search", params={"q": "pelican"}, headers={"Authorization": f"Bearer {other}"}
        )
        assert response.status_code == 200
        assert response.json()["results"] == []
        # A guest from a link to one notebook finds that notebook only.
        link = await api.post(
            f"/api/workspaces/{workspace['id']}/links",
            json={"role": "viewer", "notebook_id": notebook["id"]},
        )
        assert link.status_code == 201, link.text
        accepted = await anonymous.post(f"/api/links/{link.json()['token']}/accept", json={})
        assert accepted.status_code == 200, accepted.text
        guest = {"Authorization": f"Bearer {accepted.json()['token']}"}
        response = await anonymous.get("/api/search", params={"q": "pelican"}, headers=guest)
        assert [r["notebook_id"] for r in response.json()["results"]] == [notebook["id"]]
    assert len(await api_search(api, "pelican")) == 2
    for bad in ("0", "51", "abc", "-1"):
        response = await api.get("/api/search", params={"q": "pelican", "limit": bad})
        assert response.status_code == 400, bad
    response = await api.get("/api/search", params={"q": "x" * 201})
    assert response.status_code == 400
    response = await api.get("/api/search", params={"q": "pelican", "limit": "1"})
    assert len(response.json()["results"]) == 1
    response = await api.get("/api/search")
    assert response.json() == {"query": "", "results": []}
