"""Server-side reads of a notebook's cells (collab.sync.peers.NotebookPeer, and the plain JSON
of collab.document.notebook) on a real room.

pycrdt reads a list element by element, each read walking the list from its start, so the
peer reads the whole list in one pass and keeps the cells' indexes between reads. These
tests hold those reads to the answer of reading cell by cell, through insertions, moves,
deletions and what a hostile editor may put in ``cells``.
"""

from __future__ import annotations

import contextlib
import os
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text

from collab.document.cell_list import CellList
from collab.document.notebook import plain_json, seed_update
from collab.metrics import Metrics
from collab.settings import Settings
from collab.storage.catalog import Catalog
from collab.storage.database import open_pool
from collab.storage.document_store import DocumentStore
from collab.sync.peers import NotebookPeer
from collab.sync.room import Room
from collab.sync.room_manager import RoomManager
from tests.collab.test_search import add_user, add_workspace

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def peer_on(
    database_url: str, tmp_path: Path, sources: list[str]
) -> AsyncIterator[tuple[Room, NotebookPeer]]:
    settings = Settings(state_dir=tmp_path, database_url=database_url)
    async with contextlib.AsyncExitStack() as stack:
        pool = await stack.enter_async_context(open_pool(settings))
        catalog, store = Catalog(pool), DocumentStore(pool)
        rooms = await stack.enter_async_context(RoomManager(settings, store, catalog, Metrics()))
        workspace = await add_workspace(pool, "W", await add_user(pool))
        notebook_id = uuid.uuid4()
        cells = [{"cell_type": "code", "id": f"c{i}", "source": s} for i, s in enumerate(sources)]
        notebook = {"metadata": {}, "cells": cells}
        await catalog.create_notebook(
            workspace, notebook_id, "Cells", seed_update(notebook, notebook_id)
        )
        room = await stack.enter_async_context(rooms.use(notebook_id))
        yield room, NotebookPeer(room, rooms)


def read_cell_by_cell(room: Room) -> list[str | None]:
    """The ids in ``cells`` as reading them one by one gives (None: no cell, or no id)."""
    cells = room.doc.get("cells", type=Array)
    ids: list[str | None] = []
    for index in range(len(cells)):
        cell = cells[index]
        value = cell.get("id") if isinstance(cell, Map) else None
        ids.append(value if isinstance(value, str) else None)
    return ids


def expected_index(ids: list[str | None], cell_id: str) -> int | None:
    return ids.index(cell_id) if cell_id in ids else None


def check_lookups(room: Room, peer: NotebookPeer, asked: list[str]) -> None:
    ids = read_cell_by_cell(room)
    for cell_id in asked:
        assert peer.cell_index(cell_id) == expected_index(ids, cell_id), (cell_id, ids)
    assert [c.id for c in peer.cells()] == [i or "" for i in ids]


def new_cell(cell_id: str, source: str = "") -> Map[Any]:
    return Map({"id": cell_id, "cell_type": "code", "source": Text(source), "metadata": Map()})


async def test_cell_lookups_follow_every_structural_edit(database_url: str, tmp_path: Path) -> None:
    async with peer_on(database_url, tmp_path, [f"x{i} = {i}" for i in range(40)]) as (
        room,
        peer,
    ):
        cells = room.doc.get("cells", type=Array)
        asked = ["c0", "c7", "c39", "c20", "nope"]
        check_lookups(room, peer, asked)
        # Unchanged document: the same answers (kept), asked again.
        check_lookups(room, peer, asked)
        # An insertion above a cell already looked up moves it down.
        with room.doc.transaction():
            cells.insert(3, new_cell("n1"))
            cells.insert(0, new_cell("n0"))
        check_lookups(room, peer, [*asked, "n0", "n1"])
        # A deletion above, and of a cell looked up.
        with room.doc.transaction():
            del cells[1]
            del cells[10]
        check_lookups(room, peer, [*asked, "n0", "n1"])
        # A move (delete and insert) of the last cell to the top.
        last = read_cell_by_cell(room)[-1]
        assert last == "c39"
        with room.doc.transaction():
            del cells[len(cells) - 1]
            cells.insert(0, new_cell("c39", "moved"))
        check_lookups(room, peer, [*asked, "n0", "n1"])
        moved = peer.cell("c39")
        assert moved is not None
        assert moved.source == "moved"
        # A duplicate id inserted above the first: the first one counts.
        with room.doc.transaction():
            cells.insert(0, new_cell("c20", "duplicate"))
        check_lookups(room, peer, asked)
        assert peer.cell_index("c20") == 0
        # A cell's text edited (the document changes, no cell moves): answers hold.
        source = cells[5]["source"]
        source.insert(0, "# edited\n")
        check_lookups(room, peer, asked)


async def test_what_an_editor_may_put_in_cells_reads_as_no_cell_or_defaults(
    database_url: str, tmp_path: Path
) -> None:
    async with peer_on(database_url, tmp_path, ["a = 1", "b = 2"]) as (room, peer):
        cells = room.doc.get("cells", type=Array)
        with room.doc.transaction():
            # Fields of the wrong kind, a cell with no id, and entries that are no maps
            # (the update check refuses those from clients; a server-side write or an old
            # document may still hold one).
            cells.append(Map({"id": "odd", "metadata": "not a map", "source": Text("c = 3")}))
            cells.append(Map({"cell_type": "markdown", "source": "plain string"}))
            cells.append("junk")
            cells.append(Map({"id": 7, "source": Text("d = 4")}))
        snapshots = peer.cells()
        assert [c.id for c in snapshots] == ["c0", "c1", "odd", "", ""]
        assert [c.index for c in snapshots] == [0, 1, 2, 3, 5]
        odd = snapshots[2]
        assert (odd.metadata, odd.language, odd.source) == ({}, "python", "c = 3")
        assert (snapshots[3].cell_type, snapshots[3].source) == ("markdown", "plain string")
        assert peer.cell_index("odd") == 2
        assert peer.cell_index("7") is None  # an id that is no string names no cell


def test_plain_json_reads_shared_types_as_json() -> None:
    doc: Doc[Any] = Doc()
    table = doc.get("meta", type=Map)
    with doc.transaction():
        table["m"] = Map({"count": 3.0, "ratio": 1.5, "nested": Map({"list": Array([1, 2.0])})})
        table["t"] = Text('quote " and \\ and \x00')
        table["bytes"] = b"\x00\x01"
        table["nan"] = float("nan")
    assert plain_json(table["m"]) == {"count": 3, "ratio": 1.5, "nested": {"list": [1, 2]}}
    assert isinstance(plain_json(table["m"])["count"], int)  # type: ignore[index]
    assert plain_json(table["t"]) == 'quote " and \\ and \x00'
    # JSON has neither bytes nor NaN: numbers and null (an export stays valid JSON).
    assert plain_json(table)["bytes"] == [0, 1]  # type: ignore[index]
    assert plain_json(table)["nan"] is None  # type: ignore[index]
    assert (plain_json(2.0), plain_json("s")) == (2, "s")


def test_a_cell_list_follows_concurrent_inserts_deletions_and_moves() -> None:
    """Two editors insert, delete and move cells at once; their updates reach a third
    document (the room's) in batches. Its CellList always reads as reading cell by cell
    does. Seeded (WEFT_CELL_LIST_SEED); WEFT_CELL_LIST_STEPS for a longer campaign."""
    rng = random.Random(int(os.environ.get("WEFT_CELL_LIST_SEED", "7")))
    editors: list[Doc[Any]] = [Doc(), Doc()]
    room: Doc[Any] = Doc()
    listed = CellList(room)
    made = 0
    for step in range(int(os.environ.get("WEFT_CELL_LIST_STEPS", "300"))):
        for editor in editors:
            cells = editor.get("cells", type=Array)
            with editor.transaction():
                for _ in range(rng.randint(1, 3)):
                    roll, length = rng.random(), len(cells)
                    if roll < 0.5 or length == 0:
                        made += 1
                        cells.insert(rng.randint(0, length), Map({"id": f"x{made}"}))
                    elif roll < 0.8:
                        del cells[rng.randrange(length)]
                    else:  # a move: deleted, and inserted elsewhere as a new map
                        index = rng.randrange(length)
                        moved = cells[index]["id"]
                        del cells[index]
                        cells.insert(rng.randint(0, len(cells)), Map({"id": moved}))
        if step % 3 == 0:
            for editor in editors:
                room.apply_update(editor.get_update(room.get_state()))
            first, second = editors
            first.apply_update(second.get_update(first.get_state()))
            second.apply_update(first.get_update(second.get_state()))
        cells = room.get("cells", type=Array)
        expected = [cells[i]["id"] for i in range(len(cells))]
        assert [cell["id"] for cell in listed.entries()] == expected, step
    # Made on a document that already has cells: it reads them once.
    late = CellList(room)
    assert [cell["id"] for cell in late.entries()] == expected
