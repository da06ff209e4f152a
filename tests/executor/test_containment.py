"""Cells that misbehave are contained: the kernel recovers, other notebooks are unaffected,
and isolation is proven by inspecting the container (never by sending traffic)."""

from __future__ import annotations

import anyio
import docker
import pytest

from tests.executor.conftest import Weft, text_of

pytestmark = pytest.mark.anyio


async def _still_fine(weft: Weft, notebook_id: str, cell: str) -> None:
    run = await weft.run_and_wait(notebook_id, cell, source="print('alive')")
    assert run["state"] == "done", (run.get("error"), text_of(run))
    assert text_of(run) == "alive\n"


async def _bystander_unaffected(weft: Weft) -> None:
    other, (cell,) = await weft.notebook("print(sum(range(10)))")
    assert text_of(await weft.run_and_wait(other, cell)) == "45\n"


async def test_fork_bomb_hits_the_pids_limit(weft: Weft):
    notebook_id, (bomb,) = await weft.notebook("import os\nwhile True:\n    os.fork()")
    async with anyio.create_task_group() as tg:
        tg.start_soon(_bystander_unaffected, weft)
        run = await weft.run_and_wait(notebook_id, bomb, timeout=90)
    assert run["state"] == "error"
    assert (
        "BlockingIOError" in text_of(run)
        or "Resource temporarily unavailable" in text_of(run)
        or "limit" in text_of(run)
    ), text_of(run)
    await _still_fine(weft, notebook_id, bomb)


async def test_forked_processes_never_act_as_the_runner_and_are_reaped(weft: Weft):
    notebook_id, (forks, count) = await weft.notebook(
        "import os\nfor _ in range(5):\n    os.fork()\nx = 1",
        "import os\nprint(sum(1 for p in os.listdir('/proc') if p.isdigit()))",
    )
    # 32 copies of the cell come out of it: only the runner itself may report and go on.
    assert (await weft.run_and_wait(notebook_id, forks))["state"] == "done"
    for _ in range(3):
        run = await weft.run_and_wait(notebook_id, count)
        assert run["state"] == "done", (run.get("error"), text_of(run))
    # The 31 that exited were collected, not left as zombies holding pids.
    assert int(text_of(run)) <= 3, text_of(run)
    await _still_fine(weft, notebook_id, forks)


async def test_memory_hog_is_killed_and_the_error_names_the_limit(weft: Weft):
    notebook_id, (hog,) = await weft.notebook(
        "blocks = []\nwhile True:\n    blocks.append(bytearray(32 * 1024 * 1024))"
    )
    run = await weft.run_and_wait(notebook_id, hog, timeout=90)
    assert run["state"] == "error"
    message = text_of(run)
    assert "out of memory" in message or "MemoryError" in message, message
    if "out of memory" in message:
        assert "256 MiB" in message
    await _still_fine(weft, notebook_id, hog)
    await _bystander_unaffected(weft)


async def test_infinite_loop_is_interrupted_at_the_time_limit(weft: Weft):
    notebook_id, (loop,) = await weft.notebook("x = 1\nwhile True:\n    pass")
    run = await weft.run_and_wait(notebook_id, loop, timeout=60)
    assert run["state"] == "error"
    assert "limit" in text_of(run)
    await _still_fine(weft, notebook_id, loop)


async def test_a_loop_that_ignores_interrupts_is_killed(weft: Weft):
    stubborn = (
        "while True:\n    try:\n        while True:\n            pass\n"
        "    except KeyboardInterrupt:\n        pass"
    )
    notebook_id, (cell,) = await weft.notebook(stubborn)
    run = await weft.run_and_wait(notebook_id, cell, timeout=60)
    assert run["state"] == "error"
    assert "restarted" in text_of(run)
    await _still_fine(weft, notebook_id, cell)


async def test_interrupt_endpoint_stops_the_running_cell(weft: Weft):
    notebook_id, (loop, after) = await weft.notebook(
        "import time\nprint('sleeping', flush=True)\ntime.sleep(60)", "print('next')"
    )
    await weft.run_and_wait(notebook_id, after)  # a warm kernel: the next run starts at once
    run_id = await weft.run(notebook_id, loop)
    queued = await weft.run(notebook_id, after)
    with anyio.fail_after(30):
        while (await weft.api.get(f"/api/runs/{run_id}")).json()["state"] != "running":
            await anyio.sleep(0.05)
    await anyio.sleep(0.5)
    response = await weft.api.post(f"/api/notebooks/{notebook_id}/interrupt")
    assert response.json() == {"cancelled": 1, "interrupted": 1, "kill_offered": False}
    run = await weft.wait(run_id, timeout=20)
    assert run["state"] == "error"
    assert run["error"] == "interrupted"
    assert "KeyboardInterrupt" in text_of(run)
    assert (await weft.wait(queued))["state"] == "cancelled"
    await _still_fine(weft, notebook_id, after)


async def test_interrupt_while_the_kernel_starts_cancels_the_run(weft: Weft):
    notebook_id, (loop,) = await weft.notebook("import time\ntime.sleep(60)")
    run_id = await weft.run(notebook_id, loop)
    with anyio.fail_after(30):
        while (await weft.api.get(f"/api/runs/{run_id}")).json()["state"] == "queued":
            await anyio.sleep(0.01)
    await weft.api.post(f"/api/notebooks/{notebook_id}/interrupt")
    run = await weft.wait(run_id, timeout=20)
    assert run["state"] in ("cancelled", "error")
    assert "interrupted" in run["error"]
    await _still_fine(weft, notebook_id, loop)


async def test_restart_gives_a_fresh_kernel(weft: Weft):
    notebook_id, (a, b) = await weft.notebook("x = 1", "print(x)")
    await weft.run_and_wait(notebook_id, a)
    assert text_of(await weft.run_and_wait(notebook_id, b)) == "1\n"
    assert (await weft.api.post(f"/api/notebooks/{notebook_id}/restart")).status_code == 200
    # Every namespace went with the old kernel.
    assert "NameError" in text_of(await weft.run_and_wait(notebook_id, b))


async def test_the_container_is_locked_down(weft: Weft, docker_engine: docker.DockerClient):
    ws_a = await weft.workspace("a")
    ws_b = await weft.workspace("b")
    secret = await weft.api.put(f"/api/workspaces/{ws_b}/files/secret.txt", content=b"b only")
    assert secret.status_code == 201
    probe = (
        "import os, pathlib\n"
        "print('uid', os.getuid())\n"
        "print('net', sorted(os.listdir('/sys/class/net')))\n"
        "print('workspace', sorted(os.listdir('/workspace')))\n"
        "mounts = [l.split()[4] for l in open('/proc/self/mountinfo')]\n"
        "print('binds', sorted(m for m in mounts if m.startswith('/workspace')))\n"
        "try:\n    open('/evil', 'w')\nexcept OSError as e:\n    print('root', type(e).__name__)\n"
        "print('found', [p for p in pathlib.Path('/').glob('*/secret.txt')])\n"
    )
    notebook_id, (cell,) = await weft.notebook(probe, workspace_id=ws_a)
    await weft.api.put(f"/api/workspaces/{ws_a}/files/mine.txt", content=b"a")
    out = text_of(await weft.run_and_wait(notebook_id, cell))
    assert "uid 1000" in out
    assert "net ['lo']" in out
    assert "workspace ['mine.txt']" in out
    assert "binds ['/workspace']" in out
    assert "root OSError" in out or "root PermissionError" in out
    assert "found []" in out

    (container,) = docker_engine.containers.list(filters={"label": f"weft.notebook={notebook_id}"})
    host = container.attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["PidsLimit"] == 64
    assert host["Memory"] == 256 * 1024 * 1024
    assert "/tmp" in host["Tmpfs"]
    mounts = container.attrs["Mounts"]
    assert [m["Destination"] for m in mounts] == ["/workspace"]
    assert mounts[0]["Source"].endswith(ws_a)


async def test_network_only_where_the_workspace_allows_it(
    weft: Weft, docker_engine: docker.DockerClient
):
    ws = await weft.workspace()
    notebook_id, (cell,) = await weft.notebook("print('hi')", workspace_id=ws)
    assert (await weft.api.get(f"/api/workspaces/{ws}/executor")).json() == {"network": False}
    await weft.run_and_wait(notebook_id, cell)
    (container,) = docker_engine.containers.list(filters={"label": f"weft.notebook={notebook_id}"})
    assert container.attrs["HostConfig"]["NetworkMode"] == "none"

    allowed = await weft.api.patch(f"/api/workspaces/{ws}/executor", json={"network": True})
    assert allowed.json() == {"network": True}
    await weft.run_and_wait(notebook_id, cell)
    (container,) = docker_engine.containers.list(filters={"label": f"weft.notebook={notebook_id}"})
    # Inspected, never exercised: tests send no traffic beyond loopback.
    assert container.attrs["HostConfig"]["NetworkMode"] == "bridge"
    bad = await weft.api.patch(f"/api/workspaces/{ws}/executor", json={"network": "yes"})
    assert bad.status_code == 400
