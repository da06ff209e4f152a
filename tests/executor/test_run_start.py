"""A run's start on a worker: it catches up with the notebook's log only when its "queued"
has not reached this server's document (it came from another server). (The network setting
read with the claim: tests/executor/test_workers.py.)"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import asyncpg
import docker
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pycrdt import Array, Doc, Map, Text

from executor.queue import RunQueue
from executor.run_states import now, source_hash
from tests.conftest import StartServer
from tests.executor.conftest import Weft, running_weft, text_of
from tests.support.pyclient import py_client

pytestmark = pytest.mark.anyio

CATCH_UPS = "weft_run_log_catch_ups_total"


async def catch_ups(api: httpx.AsyncClient) -> float:
    response = await api.get("/metrics")
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == CATCH_UPS:
                return sample.value
    raise AssertionError(f"{CATCH_UPS} is not among the metrics")


async def test_runs_queued_on_this_server_start_without_catching_up(weft: Weft):
    notebook_id, (first, second) = await weft.notebook("x = 1", "print(x + 1)")
    assert (await weft.run_and_wait(notebook_id, first))["state"] == "done"
    run = await weft.run_and_wait(notebook_id, second)
    assert text_of(run) == "2\n"
    assert await catch_ups(weft.api) == 0


class AnotherServer:
    """What a server sharing the database does when it queues a run, written straight into
    the log and the queue: its document update is appended with no notice (a lost NOTIFY),
    so the worker's copy of the document lacks it until it reads the log."""

    def __init__(self, conn: asyncpg.Connection, notebook_id: str) -> None:
        self.conn = conn
        self.notebook_id = uuid.UUID(notebook_id)

    async def append(self, edit: Any) -> None:
        rows = await self.conn.fetch(
            "SELECT seq, data FROM document_updates WHERE notebook_id = $1 ORDER BY seq",
            self.notebook_id,
        )
        snapshot = await self.conn.fetchrow(
            "SELECT seq, data FROM document_snapshots WHERE notebook_id = $1", self.notebook_id
        )
        doc: Doc[Any] = Doc()
        floor = snapshot["seq"] if snapshot else 0
        if snapshot:
            doc.apply_update(bytes(snapshot["data"]))
        for row in rows:
            if row["seq"] > floor:
                doc.apply_update(bytes(row["data"]))
        before = doc.get_state()
        with doc.transaction():
            edit(doc)
        head = max([floor, *(row["seq"] for row in rows)])
        await self.conn.execute(
            "INSERT INTO document_updates (notebook_id, seq, data) VALUES ($1, $2, $3)",
            self.notebook_id,
            head + 1,
            doc.get_update(before),
        )


async def test_a_run_queued_by_another_server_sees_its_cell_after_catching_up(
    docker_engine: docker.DockerClient, start_server: StartServer, database_url: str
):
    # The feed's poll would find the missing update only after a minute: within this test,
    # only the run's own catch-up can bring it.
    async with running_weft(docker_engine, start_server, WEFT_FEED_POLL_SECONDS="60") as weft:
        notebook_id, (first,) = await weft.notebook("print('here')")
        async with py_client(weft.server.ws_base, notebook_id, token=weft.server.token) as person:
            assert (await weft.run_and_wait(notebook_id, first))["state"] == "done"
            await anyio.sleep(0.5)  # the run's last writes are in the log
            run_id, cell_id = uuid.uuid4(), "from-elsewhere"
            source = "print('queued elsewhere')"

            def queue_new_cell(doc: Doc[Any]) -> None:
                cell: Map[Any] = Map()
                doc.get("cells", type=Array).append(cell)
                cell["id"] = cell_id
                cell["cell_type"] = "code"
                cell["source"] = Text(source)
                cell["metadata"] = Map({"language": "python"})
                cell["outputs"] = Array()
                cell["execution_count"] = None
                doc.get("runs", type=Map)[cell_id] = {
                    "state": "queued",
                    "run_id": str(run_id),
                    "source_hash": source_hash(source),
                    "by": None,
                    "by_name": None,
                    "queued_at": now(),
                    "reason": "user",
                }

            conn = await asyncpg.connect(database_url)
            pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
            try:
                await AnotherServer(conn, notebook_id).append(queue_new_cell)
                assert cell_id not in person.doc.get("runs", type=Map)  # not here yet
                await RunQueue(pool).request(
                    uuid.UUID(notebook_id), [(cell_id, source, "python")], by=None, ids=[run_id]
                )
            finally:
                await pool.close()
                await conn.close()
            run = await weft.wait(str(run_id))
            assert run["state"] == "done", run
            assert text_of(run) == "queued elsewhere\n"
            assert await catch_ups(weft.api) == 1
            # The person on this server sees the cell, and its run done.
            with anyio.fail_after(10):
                while (person.doc.get("runs", type=Map).get(cell_id) or {}).get("state") != "done":
                    await anyio.sleep(0.05)
