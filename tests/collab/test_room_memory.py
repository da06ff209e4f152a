"""A room the server is done with is freed, with its document. The binding holds every
document's observers, and a room observes its document: before rooms were retired, every
unloaded room stayed in memory for good (a notebook of 10,000 cells, ~90 MB at every load),
so opening and leaving large notebooks again and again grew the server until it died."""

from __future__ import annotations

import gc
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from pycrdt import Array, Doc, Map, Text

from collab.document.cell_list import CellList
from collab.document.cell_text import stored_cells
from collab.document.notebook import seed_update
from collab.metrics import Metrics
from collab.settings import Settings
from collab.storage.catalog import Catalog
from collab.storage.database import open_pool
from collab.storage.document_store import DocumentStore
from collab.sync.room import Room
from collab.sync.room_manager import RoomManager

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def _rooms(database_url: str) -> AsyncIterator[tuple[RoomManager, uuid.UUID]]:
    """A room manager whose rooms unload 50 ms after their last user, and a notebook."""
    settings = Settings(database_url=database_url, room_grace_seconds=0.05)
    async with open_pool(settings) as pool:
        workspace_id, notebook_id = uuid.uuid4(), uuid.uuid4()
        await pool.execute("INSERT INTO workspaces (id, name) VALUES ($1, 'ws')", workspace_id)
        cells = [{"cell_type": "code", "source": f"x{i} = {i}"} for i in range(200)]
        seed = seed_update({"metadata": {}, "cells": cells}, notebook_id)
        catalog = Catalog(pool)
        await catalog.create_notebook(workspace_id, notebook_id, "nb", seed)
        async with RoomManager(settings, DocumentStore(pool), catalog, Metrics()) as rooms:
            yield rooms, notebook_id


def _add_cell(room: Room, source: str) -> None:
    """A server-side edit (the executor's and the assistant's kind), logged like a client's."""
    cells: Array[Any] = room.doc.get("cells", type=Array)
    cells.append(Map({"id": source, "cell_type": "code", "source": Text(source)}))


def _freed(*refs: weakref.ref[Any]) -> bool:
    gc.collect()
    return all(ref() is None for ref in refs)


async def _unloaded(rooms: RoomManager, notebook_id: uuid.UUID) -> None:
    with anyio.fail_after(5):
        while rooms.loaded(notebook_id) is not None:
            await anyio.sleep(0.02)


async def test_an_unloaded_room_is_freed_with_its_document_and_keeps_its_edits(
    database_url: str,
) -> None:
    async with _rooms(database_url) as (rooms, notebook_id):
        refs = []
        for n in range(3):
            async with rooms.use(notebook_id) as room:
                assert len(room.cells) == 200 + n  # every earlier edit is there
                _add_cell(room, f"edit{n}")
                refs.append((weakref.ref(room), weakref.ref(room.doc)))
            del room
            await _unloaded(rooms, notebook_id)
            assert _freed(*refs[-1]), f"room {n} (or its document) is still in memory"
        stored = await rooms._store.load(notebook_id)
        ids, _ = stored_cells(stored.updates)
        assert ids[-3:] == ["edit0", "edit1", "edit2"]


async def test_a_room_forgotten_while_in_use_is_freed_when_its_last_user_leaves(
    database_url: str,
) -> None:
    async with _rooms(database_url) as (rooms, notebook_id):
        async with rooms.use(notebook_id) as room:
            rooms.evict(notebook_id, "notebook deleted")  # as when the notebook is deleted
            refs = (weakref.ref(room), weakref.ref(room.doc))
            assert len(room.cells) == 200  # its user may still read it
            assert not _freed(*refs)
        del room
        assert _freed(*refs)


def test_a_document_read_through_a_cell_list_is_freed() -> None:
    """What the search index does with a stored notebook (collab.document.cell_text)."""
    notebook_id = uuid.uuid4()
    cells = [{"cell_type": "code", "source": f"y{i}"} for i in range(50)]
    seed = seed_update({"metadata": {}, "cells": cells}, notebook_id)
    doc: Doc[Any] = Doc()
    listed = CellList(doc)
    doc.apply_update(seed)
    assert len(listed.entries()) == 50
    refs = (weakref.ref(doc), weakref.ref(listed))
    del doc, listed
    assert _freed(*refs)
