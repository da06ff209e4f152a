"""`weft executor` workers beside servers that only queue runs (WEFT_EXECUTOR=off): every run
happens once, outputs reach clients on the server through the shared log, and a worker that
dies loses its lease while the other keeps working."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import asyncpg
import docker
import httpx
import pytest

from tests.conftest import StartServer
from tests.executor.conftest import EXECUTOR_ENV, Weft, remove_kernels, text_of
from tests.support.nodeclient import node_client
from tests.support.server import WorkerProcess

pytestmark = pytest.mark.anyio


@pytest.fixture
async def cluster(
    docker_engine: docker.DockerClient,
    start_server: StartServer,
    database_url: str,
    tmp_path: Path,
) -> AsyncIterator[tuple[Weft, list[WorkerProcess]]]:
    files = str(tmp_path / "files")
    server = await start_server(WEFT_EXECUTOR="off", WEFT_FILES_DIR=files)
    instances = [f"weft-test-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    workers = [
        WorkerProcess(
            tmp_path / f"worker{n}",
            {
                **EXECUTOR_ENV,
                "DATABASE_URL": database_url,
                "WEFT_FILES_DIR": files,
                "WEFT_INSTANCE": instance,
                "WEFT_FEED_POLL_SECONDS": "1",
            },
        )
        for n, instance in enumerate(instances)
    ]
    try:
        for worker in workers:
            await worker.start()
        async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=server.auth) as api:
            yield Weft(server, api), workers
    finally:
        for worker in workers:
            worker.stop()
        for instance in instances:
            remove_kernels(docker_engine, instance)


async def test_workers_run_each_commit_once_and_outputs_reach_clients(cluster):
    weft, _workers = cluster
    ws = await weft.workspace()
    notebooks = []
    for n in range(3):
        code = f"open('/workspace/log.txt', 'a').write('nb{n}\\n')\nprint('hello from {n}')"
        notebooks.append(await weft.notebook(code, code, workspace_id=ws))
    run_ids = []
    for notebook_id, (first, second) in notebooks:
        run_ids += [await weft.run(notebook_id, first), await weft.run(notebook_id, second)]
    for run_id in run_ids:
        assert (await weft.wait(run_id, timeout=120))["state"] == "done"
    files = Path(_workers[0].env["WEFT_FILES_DIR"]) / ws / "log.txt"
    assert sorted(files.read_text().split()) == sorted(f"nb{n}" for n in range(3) for _ in "ab")
    # The worker wrote the outputs into its copy of the document; the server's clients see them.
    notebook_id, (first, _second) = notebooks[0]
    async with node_client(weft.server.ws_base, notebook_id, token=weft.server.token) as person:
        with anyio.fail_after(20):
            while True:
                state = await person.call("state")
                outputs = state["cells"][0]["outputs"]
                if outputs and outputs[0].get("text") == "hello from 0\n":
                    break
                await anyio.sleep(0.1)
        assert state["runs"][first]["state"] == "done"


async def test_a_dead_worker_loses_its_lease_and_the_other_carries_on(cluster, database_url: str):
    weft, workers = cluster
    notebook_id, (slow,) = await weft.notebook("import time\ntime.sleep(60)")
    slow_run = await weft.run(notebook_id, slow)
    with anyio.fail_after(60):
        while (await weft.api.get(f"/api/runs/{slow_run}")).json()["state"] != "running":
            await anyio.sleep(0.05)
    conn = await asyncpg.connect(database_url)
    try:
        claimed_by = await conn.fetchval(
            "SELECT claimed_by FROM runs WHERE id = $1", uuid.UUID(slow_run)
        )
    finally:
        await conn.close()
    holder = next(w for w in workers if w.proc and f":{w.proc.pid}:" in claimed_by)
    holder.kill()
    lost = await weft.wait(slow_run, timeout=60)
    assert lost["state"] == "error"
    assert "executor" in lost["error"]
    # The notebook's queue moves on, on the surviving worker.
    run = await weft.run_and_wait(notebook_id, slow, source="print('next')", timeout=60)
    assert text_of(run) == "next\n"


async def test_interrupt_reaches_the_worker_holding_the_run(cluster):
    weft, _workers = cluster
    notebook_id, (loop,) = await weft.notebook(
        "import time\nprint('go', flush=True)\ntime.sleep(60)"
    )
    await weft.run_and_wait(notebook_id, loop, source="1")
    run_id = await weft.run(notebook_id, loop)
    with anyio.fail_after(60):
        while (await weft.api.get(f"/api/runs/{run_id}")).json()["state"] != "running":
            await anyio.sleep(0.05)
    await anyio.sleep(0.5)
    response = await weft.api.post(f"/api/notebooks/{notebook_id}/interrupt")
    assert response.json()["interrupted"] == 1
    run = await weft.wait(run_id, timeout=20)
    # Either the cell was stopped, or (on a worker still starting a kernel) never started.
    assert run["error"] in ("interrupted", "interrupted before it started")


async def test_a_network_change_on_the_server_holds_for_the_next_run_on_a_worker(cluster):
    """The server that changes the setting holds no kernel: only the setting read with each
    claim (never cached) can give the next run's kernel the new one, on whichever worker."""
    weft, _workers = cluster
    ws = await weft.workspace()
    notebook_id, (cell,) = await weft.notebook(
        "import os\nprint(sorted(os.listdir('/sys/class/net')))", workspace_id=ws
    )

    async def interfaces() -> str:
        run = await weft.run_and_wait(notebook_id, cell, timeout=120)
        assert run["state"] == "done", run
        return text_of(run)

    assert await interfaces() == "['lo']\n"
    for allowed, seen in ((True, "['eth0', 'lo']\n"), (False, "['lo']\n")):
        changed = await weft.api.patch(f"/api/workspaces/{ws}/executor", json={"network": allowed})
        assert changed.json() == {"network": allowed}
        # Inspected from inside, never exercised: no traffic beyond loopback.
        assert await interfaces() == seen
