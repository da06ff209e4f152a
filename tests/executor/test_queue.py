"""The run queue: a commit survives a crash and runs once; several executors share a queue
and every run happens exactly once."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import docker
import httpx
import pytest

from tests.conftest import StartServer
from tests.executor.conftest import EXECUTOR_ENV, Weft, remove_kernels, text_of

pytestmark = pytest.mark.anyio


async def test_a_queued_run_survives_a_crash_and_runs_once(weft: Weft):
    notebook_id, (slow, target) = await weft.notebook("import time\ntime.sleep(60)", "print('ran')")
    slow_run = await weft.run(notebook_id, slow)
    target_run = await weft.run(notebook_id, target)
    with anyio.fail_after(30):
        while (await weft.api.get(f"/api/runs/{slow_run}")).json()["state"] != "running":
            await anyio.sleep(0.05)
    assert (await weft.api.get(f"/api/runs/{target_run}")).json()["state"] == "queued"
    weft.server.kill()
    await weft.server.start()
    # The run that was in flight is failed with the reason once its lease lapses;
    # the queued one then runs, exactly once.
    lost = await weft.wait(slow_run, timeout=60)
    assert lost["state"] == "error"
    assert "executor" in lost["error"]
    done = await weft.wait(target_run, timeout=60)
    assert done["state"] == "done"
    assert text_of(done) == "ran\n"
    runs = (await weft.api.get(f"/api/notebooks/{notebook_id}/runs")).json()["runs"]
    assert runs == []


async def test_two_executors_share_one_queue_exactly_once(
    docker_engine: docker.DockerClient, start_server: StartServer, tmp_path: Path
):
    shared = tmp_path / "files"
    instances = [f"weft-test-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    servers = [
        await start_server(**EXECUTOR_ENV, WEFT_FILES_DIR=str(shared), WEFT_INSTANCE=instance)
        for instance in instances
    ]
    try:
        async with httpx.AsyncClient(
            base_url=servers[0].url, timeout=60, headers=servers[0].auth
        ) as api:
            weft = Weft(servers[0], api)
            ws = await weft.workspace()
            run_ids = []
            for n in range(4):
                code = f"open('/workspace/log.txt', 'a').write('nb{n}\\n')"
                notebook_id, (first, second) = await weft.notebook(code, code, workspace_id=ws)
                run_ids += [await weft.run(notebook_id, first), await weft.run(notebook_id, second)]
            for run_id in run_ids:
                assert (await weft.wait(run_id, timeout=120))["state"] == "done"
        lines = (shared / ws / "log.txt").read_text().split()
        assert sorted(lines) == sorted(f"nb{n}" for n in range(4) for _ in range(2))
    finally:
        for server in servers:
            server.stop()
        for instance in instances:
            remove_kernels(docker_engine, instance)
