"""Deleting a notebook or a workspace while its document is being appended to: no deadlock.

An append (the document store) share-locks the notebook's snapshot row, then its foreign key locks
the notebook row. A delete that locked the notebook row first and reached the snapshot row
through the cascade took the two the other way round; PostgreSQL broke the deadlock after
deadlock_timeout (1 s) by failing the delete or the append.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import anyio
import asyncpg
import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.support.pyclient import PyYClient, py_client
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio

# Well under PostgreSQL's deadlock_timeout (1 s): a delete that waited for the deadlock
# detector takes longer.
QUICK_SECONDS = 0.5
# Every client types a stamp this often: 32 notebooks at 100 edits a second each keeps the
# log busy for every delete. (At 500 a second each the server itself falls behind since every
# update is checked before it is applied, and deletes wait behind the backlog, not a lock.)
TYPING_INTERVAL = 0.01

Deleted = tuple[int, str, float]  # status, body, seconds


async def _deadlocks(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        )
        return count
    finally:
        await conn.close()


async def _deadlocks_since(database_url: str, before: int) -> int:
    """The deadlocks since ``before``. A backend reports its counters within a second of
    going idle (or as it exits), so a zero is only trusted after a little while."""
    deadline = time.monotonic() + 1
    while True:
        count = await _deadlocks(database_url) - before
        if count or time.monotonic() > deadline:
            return count
        await anyio.sleep(0.1)


async def _delete(api: httpx.AsyncClient, path: str, into: list[Deleted]) -> None:
    started = time.monotonic()
    response = await api.delete(path)
    into.append((response.status_code, response.text, time.monotonic() - started))


async def _new_workspace(api: httpx.AsyncClient, notebooks: int) -> tuple[str, list[str]]:
    workspace = (await api.post("/api/workspaces", json={"name": "ws"})).json()
    ids = []
    for n in range(notebooks):
        response = await api.post(
            f"/api/workspaces/{workspace['id']}/notebooks", json={"title": f"nb{n}"}
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return workspace["id"], ids


def _logged_deadlocks(server: ServerProcess) -> list[str]:
    """What the server logged about deadlocks: a failed delete, or a failed append."""
    found = []
    for line in server.log_text().splitlines():
        if "deadlock detected" in line:
            record = json.loads(line)
            text = f"{record.get('event')}: {record.get('exc') or record.get('error')}"
            found.append(" / ".join(t.strip() for t in text.splitlines() if "deadlock" in t))
    return found


def _check_deleted(server: ServerProcess, deleted: Sequence[Deleted]) -> None:
    failed = [(status, body) for status, body, _ in deleted if status != 204]
    assert not failed, (failed, _logged_deadlocks(server))
    slowest = max(seconds for _, _, seconds in deleted)
    assert slowest < QUICK_SECONDS, f"a delete took {slowest:.2f} s (a deadlock broken?)"


async def _check_no_deadlock(server: ServerProcess, database_url: str, before: int) -> None:
    logged = _logged_deadlocks(server)
    assert not logged, logged
    server.stop()  # its connections' backends report their counters as they exit
    assert await _deadlocks_since(database_url, before) == 0


# -- an append in flight, step by step ------------------------------------------------


async def _blocked_by(monitor: asyncpg.Connection, pid: int) -> None:
    """Until some backend waits for a lock that backend ``pid`` holds."""
    with anyio.fail_after(5):
        while not await monitor.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", pid
        ):
            await anyio.sleep(0.01)


@pytest.mark.parametrize("what", ["notebook", "workspace"])
async def test_a_delete_waits_for_an_append_in_flight(
    what: str, server: ServerProcess, api: httpx.AsyncClient, database_url: str
) -> None:
    """The append's two steps, run apart: the delete must not lock the notebook row
    between them (the append's second step would then wait for the delete, which waits
    for the append)."""
    workspace_id, notebook_ids = await _new_workspace(api, 2)
    path = (
        f"/api/notebooks/{notebook_ids[0]}"
        if what == "notebook"
        else f"/api/workspaces/{workspace_id}"
    )
    ids = [uuid.UUID(n) for n in notebook_ids]
    before = await _deadlocks(database_url)
    append = await asyncpg.connect(database_url)
    monitor = await asyncpg.connect(database_url)
    deleted: list[Deleted] = []
    deadlocked = ""
    try:
        async with anyio.create_task_group() as tg:
            transaction = append.transaction()
            await transaction.start()
            # collab.storage.document_store._APPEND, first: share-lock the snapshot rows.
            await append.execute(
                "SELECT seq FROM document_snapshots WHERE notebook_id = ANY($1) FOR SHARE", ids
            )
            tg.start_soon(_delete, api, path, deleted)
            await _blocked_by(monitor, append.get_server_pid())
            # Then: insert, the foreign key key-share-locking the notebook rows.
            started = time.monotonic()
            try:
                await append.executemany(
                    "INSERT INTO document_updates (notebook_id, seq, data) VALUES ($1, 1, '')",
                    [(i,) for i in ids],
                )
            except asyncpg.DeadlockDetectedError as exc:
                deadlocked = str(exc)
            inserted = time.monotonic() - started
            await (transaction.rollback() if deadlocked else transaction.commit())
    finally:
        await append.close()
        await monitor.close()
    assert not deadlocked, f"PostgreSQL failed the append to break a deadlock: {deadlocked}"
    _check_deleted(server, deleted)
    assert inserted < QUICK_SECONDS, f"the append waited {inserted:.2f} s for the delete"
    await _check_no_deadlock(server, database_url, before)


# -- live clients typing ----------------------------------------------------------------


async def _type(client: PyYClient, tag: str) -> None:
    """Type a stamp every few milliseconds until the server closes the connection."""
    n = 0
    with contextlib.suppress(ConnectionClosed):
        while not client.closed.is_set():
            await client.insert(1 << 30, f"{tag}{n} ")
            n += 1
            await anyio.sleep(TYPING_INTERVAL)


@contextlib.asynccontextmanager
async def _typing(
    server: ServerProcess, notebook_ids: Sequence[str]
) -> AsyncIterator[list[PyYClient]]:
    """A client typing into each notebook, for as long as the block runs."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(py_client(server.ws_base, n, token=server.token))
            for n in notebook_ids
        ]
        async with anyio.create_task_group() as tg:
            for index, client in enumerate(clients):
                tg.start_soon(_type, client, f"c{index}-")
            await anyio.sleep(0.5)  # every room loaded and being written
            yield clients
            tg.cancel_scope.cancel()


async def _closes(clients: Sequence[PyYClient]) -> list[tuple[int | None, str]]:
    """Each client's close code and reason (None: still open after a few seconds)."""
    with anyio.move_on_after(5):
        for client in clients:
            await client.closed.wait()
    return [(c.close_code, c.close_reason) if c.closed.is_set() else (None, "") for c in clients]


async def test_deleting_notebooks_while_they_are_typed_in(
    server: ServerProcess, api: httpx.AsyncClient, database_url: str
) -> None:
    before = await _deadlocks(database_url)
    _, notebook_ids = await _new_workspace(api, 32)
    deleted: list[Deleted] = []
    async with _typing(server, notebook_ids) as clients:
        for notebook_id in notebook_ids:
            await _delete(api, f"/api/notebooks/{notebook_id}", deleted)
            await anyio.sleep(0.02)
        closes = await _closes(clients)
    await _check_no_deadlock(server, database_url, before)
    _check_deleted(server, deleted)
    assert closes == [(4410, "notebook deleted")] * len(clients)


async def test_deleting_workspaces_while_their_notebooks_are_typed_in(
    server: ServerProcess, api: httpx.AsyncClient, database_url: str
) -> None:
    before = await _deadlocks(database_url)
    workspaces = [await _new_workspace(api, 3) for _ in range(10)]
    deleted: list[Deleted] = []
    async with _typing(server, [n for _, ids in workspaces for n in ids]) as clients:
        for workspace_id, _ in workspaces:
            await _delete(api, f"/api/workspaces/{workspace_id}", deleted)
            await anyio.sleep(0.02)
        closes = await _closes(clients)
    await _check_no_deadlock(server, database_url, before)
    _check_deleted(server, deleted)
    # The writer may find a notebook gone (its append failing on the foreign key) before
    # the handler evicts the room: either way its clients are told it is gone.
    assert [code for code, _ in closes] == [4410] * len(clients), closes
    assert {reason for _, reason in closes} <= {"workspace deleted", "notebook deleted"}
