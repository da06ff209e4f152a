"""Hostile cells: each test is one attack an editor's code can make. The worst a cell may do
is break its own notebook's kernel; every limit it hits ends with a clear message in that
cell; the server stays fast for everyone meanwhile (/healthz is timed throughout).
Containment is shown by inspecting the container, never by reaching out of it."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import docker
import httpx
import pytest

from tests.conftest import StartServer
from tests.executor.conftest import (
    EXECUTOR_ENV,
    Weft,
    remove_kernels,
    text_of,
    unmount_workspaces,
)
from tests.support.nodeclient import node_client

pytestmark = pytest.mark.anyio

HEALTHZ_MAX_S = 1.0

# Cell code that finds the runner's protocol descriptor and the run in progress, as an
# attacker would (any object of the runner is in reach of cell code).
FIND_CHANNEL = (
    "import gc, os, time\n"
    "writer = next(o for o in gc.get_objects() if type(o).__name__ == 'ProtocolWriter')\n"
    "streams = next(o for o in gc.get_objects() if type(o).__name__ == 'Streams')\n"
    "fd, run_id = writer._fd, streams.run_id\n"
)


@pytest.fixture
async def weft_with(
    docker_engine: docker.DockerClient, start_server: StartServer
) -> AsyncIterator[Any]:
    """Like the `weft` fixture, with settings of the test's own."""
    stack = contextlib.AsyncExitStack()
    instances: list[str] = []

    async def start(**env: str) -> Weft:
        instance = f"weft-test-{uuid.uuid4().hex[:8]}"
        instances.append(instance)
        server = await start_server(**{**EXECUTOR_ENV, **env}, WEFT_INSTANCE=instance)
        stack.callback(unmount_workspaces, server.state_dir)
        stack.callback(server.stop)
        api = httpx.AsyncClient(base_url=server.url, timeout=60, headers=server.auth)
        await stack.enter_async_context(api)
        return Weft(server, api)

    try:
        yield start
    finally:
        await stack.aclose()
        for instance in instances:
            remove_kernels(docker_engine, instance)


@contextlib.asynccontextmanager
async def healthz_stays_fast(weft: Weft) -> AsyncIterator[list[float]]:
    """Time /healthz every 100 ms while the block runs; fail if one answer was slow."""
    times: list[float] = []

    async def poll() -> None:
        async with httpx.AsyncClient(base_url=weft.server.url, timeout=60) as client:
            while True:
                start = time.monotonic()
                response = await client.get("/healthz")
                times.append(time.monotonic() - start)
                assert response.status_code == 200
                await anyio.sleep(0.1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(poll)
        yield times
        tg.cancel_scope.cancel()
    assert times, "healthz was never answered"
    assert max(times) < HEALTHZ_MAX_S, f"/healthz took up to {max(times):.2f} s"


async def doc_state(weft: Weft, notebook_id: str) -> dict[str, Any]:
    async with node_client(weft.server.ws_base, notebook_id, token=weft.server.token) as peer:
        await anyio.sleep(0.3)
        return await peer.call("state")


async def settled_run_state(weft: Weft, notebook_id: str, cell: str) -> dict[str, Any]:
    """The cell's run state in the document, once it is no longer queued or running."""
    with anyio.fail_after(30):
        while True:
            state = await doc_state(weft, notebook_id)
            run = state["runs"].get(cell) or {}
            if run.get("state") not in (None, "queued", "running"):
                return state
            await anyio.sleep(0.5)


async def still_fine(weft: Weft, notebook_id: str, cell: str) -> None:
    run = await weft.run_and_wait(notebook_id, cell, source="print('alive')")
    assert run["state"] == "done", (run.get("error"), text_of(run))
    assert text_of(run) == "alive\n"


# -- 1. what comes out of a container is untrusted input -------------------------------


async def test_an_endless_line_on_the_channel_stops_the_kernel_and_not_the_server(weft: Weft):
    attack = FIND_CHANNEL + "os.write(fd, b'x' * (48 << 20))\ntime.sleep(30)"
    notebook_id, (cell,) = await weft.notebook(attack)
    async with healthz_stays_fast(weft):
        run = await weft.run_and_wait(notebook_id, cell, timeout=60)
    assert run["state"] == "error"
    assert "more than 32 MiB" in run["error"], run["error"]
    assert "WEFT_KERNEL_MESSAGE_MAX_BYTES" in text_of(run)
    state = await doc_state(weft, notebook_id)
    assert state["runs"][cell]["state"] == "error"
    assert state["kernel"]["state"] == "dead"
    await still_fine(weft, notebook_id, cell)


FORGERIES = {
    "an array": (b"[1, 2, 3]", "must be a JSON object"),
    "not JSON": (b"hello from the cell", "not JSON"),
    "NaN": (b'{"type": "stream", "run_id": RUN, "name": "stdout", "text": NaN}', "NaN"),
    "an unknown type": (b'{"type": "launch", "run_id": RUN}', "unknown message type"),
    "a bad stream": (
        b'{"type": "stream", "run_id": RUN, "name": "evil", "text": "x"}',
        "stdout or stderr",
    ),
    "a bundle that is a string": (
        b'{"type": "display", "run_id": RUN, "data": "x", "metadata": {}}',
        "mime bundle",
    ),
    "a done for another run": (
        b'{"type": "done", "run_id": "not-this-run", "status": "ok", "defined": [],'
        b' "symbols": [], "duration_ms": 1}',
        "not in progress",
    ),
    "a second ready": (b'{"type": "ready", "python": "3", "pid": 1}', "'ready' a second time"),
    "bad symbols": (
        b'{"type": "done", "run_id": RUN, "status": "ok", "defined": ["x"],'
        b' "symbols": [1, "x"], "duration_ms": 1}',
        "every symbol",
    ),
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
async def test_a_message_that_breaks_the_protocol_ends_the_run_with_the_reason(
    weft: Weft, forgery: str
):
    line, reason = FORGERIES[forgery]
    attack = (
        FIND_CHANNEL
        + f"line = {line!r}.replace(b'RUN', ('\"%s\"' % run_id).encode())\n"
        + "os.write(fd, line + b'\\n')\ntime.sleep(20)"
    )
    notebook_id, (cell,) = await weft.notebook(attack)
    async with healthz_stays_fast(weft):
        run = await weft.run_and_wait(notebook_id, cell, timeout=30)
    assert run["state"] == "error"
    assert reason in run["error"], run["error"]
    assert "the kernel was stopped" in run["error"]
    state = await settled_run_state(weft, notebook_id, cell)
    assert state["runs"][cell]["state"] == "error"
    assert state["kernel"]["state"] == "dead"
    assert state["symbols"].get(cell) in (None, [])
    await still_fine(weft, notebook_id, cell)


async def test_a_forged_done_is_found_out_and_its_symbols_dropped(weft: Weft):
    forged = {
        "type": "done",
        "status": "ok",
        "defined": ["pwned"],
        "symbols": [{"name": "pwned", "type": "builtins.str", "repr": "'owned'"}],
        "duration_ms": 1,
    }
    attack = (
        FIND_CHANNEL
        + f"forged = {json.dumps(forged)!r}.replace('{{', '{{\"run_id\": \"%s\", ' % run_id, 1)\n"
        + "os.write(fd, forged.encode() + b'\\n')\ntime.sleep(1)\nx = 1"
    )
    notebook_id, (cell, other) = await weft.notebook(attack, "y = 2")
    async with healthz_stays_fast(weft):
        await weft.run_and_wait(notebook_id, cell, timeout=30)
        # The real end of the run arrives later: the kernel is found out and stopped.
        with anyio.fail_after(30):
            while True:
                state = await doc_state(weft, notebook_id)
                if state["runs"][cell]["state"] == "error":
                    break
                await anyio.sleep(0.5)
    assert "second 'done'" in state["runs"][cell]["error"]
    assert state["symbols"].get(cell) == []
    assert state["kernel"]["state"] == "dead"
    other_run = await weft.run_and_wait(notebook_id, other)
    assert other_run["state"] == "done", other_run
    await still_fine(weft, notebook_id, cell)


# -- 2. caps on what a run puts into the shared document --------------------------------


async def cell_outputs(weft: Weft, notebook_id: str, cell: str) -> list[dict[str, Any]]:
    """The cell's outputs in the document, as everyone downloads them (the .ipynb export)."""
    exported = (await weft.api.get(f"/api/notebooks/{notebook_id}/export")).json()
    (found,) = [c for c in exported["cells"] if c["id"] == cell]
    outputs: list[dict[str, Any]] = found["outputs"]
    return outputs


async def test_a_huge_display_is_cut_with_a_note(weft: Weft):
    attack = "display({'text/html': '<b>' * 10_000_000, 'text/plain': 'big'}, raw=True)"
    notebook_id, (cell,) = await weft.notebook(attack)
    async with healthz_stays_fast(weft):
        run = await weft.run_and_wait(notebook_id, cell, timeout=60)
    assert run["state"] == "done", text_of(run)
    (output,) = run["outputs"]
    assert "text/html" not in output["data"]
    assert "WEFT_OUTPUT_MAX_BYTES" in output["data"]["text/plain"]
    assert output["data"]["text/plain"].startswith("big\n[output cut: 30 MB")
    assert len(json.dumps(await cell_outputs(weft, notebook_id, cell))) < 10_000
    await still_fine(weft, notebook_id, cell)


async def test_many_big_displays_are_capped_per_cell_and_in_the_run_record(weft: Weft):
    attack = "for i in range(10):\n    display({'text/html': str(i) * (3 << 20)}, raw=True)"
    notebook_id, (cell,) = await weft.notebook(attack)
    async with healthz_stays_fast(weft):
        run_id = await weft.run(notebook_id, cell)
        run = await weft.wait(run_id, timeout=60)
        size = len((await weft.api.get(f"/api/runs/{run_id}")).content)
    assert run["state"] == "done", run["error"]
    assert size < 2_100_000
    assert "WEFT_RUN_RECORD_MAX_BYTES" in text_of(run)[-1000:]
    outputs = await cell_outputs(weft, notebook_id, cell)
    size = len(json.dumps(outputs))
    assert size < 10_100_000
    kinds = ["cut" if "metadata" in o and o["metadata"].get("weft") else "big" for o in outputs]
    assert kinds == ["big", "big", "big", "cut"]  # three of 3 MiB, then the note
    assert "WEFT_CELL_OUTPUTS_MAX_BYTES" in outputs[-1]["data"]["text/plain"]


async def test_outputs_per_cell_are_counted(weft: Weft):
    attack = "import sys\nfor i in range(3000):\n    display(i)"
    notebook_id, (cell,) = await weft.notebook(attack)
    run = await weft.run_and_wait(notebook_id, cell, timeout=60)
    assert run["state"] == "done"
    outputs = await cell_outputs(weft, notebook_id, cell)
    assert len(outputs) == 1000
    assert "WEFT_CELL_OUTPUTS_MAX_COUNT" in outputs[-1]["data"]["text/plain"]


async def test_fifty_thousand_names_are_summed_up_in_the_symbol_table(weft_with: Any):
    weft = await weft_with(WEFT_SYMBOLS_MAX_BYTES="30000")
    attack = "for i in range(50_000):\n    globals()[f'name_{i}'] = 'x' * 50"
    notebook_id, (cell,) = await weft.notebook(attack)
    async with healthz_stays_fast(weft):
        run = await weft.run_and_wait(notebook_id, cell, timeout=60)
    assert run["state"] == "done", text_of(run)
    state = await doc_state(weft, notebook_id)
    symbols = state["symbols"][cell]
    assert len(json.dumps(symbols)) < 30_000
    assert [s["name"] for s in symbols[:3]] == ["i", "name_0", "name_1"]
    assert symbols[-1]["type"] == "weft.cut"
    assert "WEFT_SYMBOLS_MAX_BYTES" in symbols[-1]["repr"]


# -- 3. the workspace quota holds against cells; the host's disk is not at their mercy ----

FILL = (
    "import errno, os\n"
    "written = 0\n"
    "try:\n"
    "    with open('big.bin', 'wb') as f:\n"
    "        while True:\n"
    "            f.write(b'x' * (1 << 20))\n"
    "            f.flush()\n"
    "            written += 1 << 20\n"
    "except OSError as e:\n"
    "    print('refused', errno.errorcode[e.errno], written < 50_000_000)\n"
    "with open('sparse.bin', 'wb') as f:\n"
    "    f.seek(10**11)\n"
    "    f.write(b'x')\n"
    "print('sparse', os.path.getsize('sparse.bin'))\n"
)


async def test_a_cell_cannot_write_past_the_workspace_quota(weft_with: Any):
    weft = await weft_with(WEFT_FILES_QUOTA_BYTES="50000000")
    workspace = await weft.workspace()
    notebook_id, (cell,) = await weft.notebook(FILL, workspace_id=workspace)
    async with healthz_stays_fast(weft):
        run = await weft.run_and_wait(notebook_id, cell, timeout=60)
    assert "refused ENOSPC True" in text_of(run), text_of(run)
    assert "sparse 100000000001" in text_of(run)
    listing = (await weft.api.get(f"/api/workspaces/{workspace}/files")).json()
    assert listing["quota_bytes"] == 50_000_000
    assert 35_000_000 < listing["usage_bytes"] <= listing["quota_bytes"]
    # What the host's disk holds for the workspace: the image, at most the quota.
    image = weft.server.state_dir / "files" / ".volumes" / f"{workspace}.ext4"
    assert image.stat().st_blocks * 512 <= 50_000_000
    # Uploads meet the same wall.
    upload = await weft.api.put(f"/api/workspaces/{workspace}/files/more.bin", content=b"y" * 10**7)
    assert upload.status_code == 413
    assert "quota" in upload.json()["error"]["message"]
    # Deleting makes room again, for cells and uploads alike.
    assert (await weft.api.delete(f"/api/workspaces/{workspace}/files/big.bin")).status_code == 204
    again = await weft.run_and_wait(notebook_id, cell, timeout=60)
    assert "refused ENOSPC True" in text_of(again)


async def test_printing_does_not_grow_a_log_on_the_host(
    weft: Weft, docker_engine: docker.DockerClient
):
    notebook_id, (cell,) = await weft.notebook("for _ in range(20):\n    print('x' * (1 << 20))")
    async with healthz_stays_fast(weft):
        run = await weft.run_and_wait(notebook_id, cell, timeout=60)
    assert "output truncated" in text_of(run)[-200:]
    (container,) = docker_engine.containers.list(filters={"label": f"weft.notebook={notebook_id}"})
    assert container.attrs["HostConfig"]["LogConfig"]["Type"] == "none"
    assert container.attrs["LogPath"] == ""  # the engine keeps no file of what was printed


async def test_shared_memory_is_bounded(weft_with: Any, docker_engine: docker.DockerClient):
    weft = await weft_with(WEFT_KERNEL_SHM_MB="16")
    fill = (
        "import os\n"
        "st = os.statvfs('/dev/shm')\n"
        "print('size', st.f_blocks * st.f_frsize)\n"
        "try:\n"
        "    with open('/dev/shm/fill', 'wb') as f:\n"
        "        f.write(b'x' * (32 << 20))\n"
        "except OSError as e:\n"
        "    print('refused', e.strerror)\n"
    )
    notebook_id, (cell,) = await weft.notebook(fill)
    out = text_of(await weft.run_and_wait(notebook_id, cell))
    assert f"size {16 << 20}" in out, out
    assert "refused No space left on device" in out
    (container,) = docker_engine.containers.list(filters={"label": f"weft.notebook={notebook_id}"})
    assert container.attrs["HostConfig"]["ShmSize"] == 16 << 20


async def test_the_kernel_has_a_private_cgroup_namespace(
    weft: Weft, docker_engine: docker.DockerClient
):
    probe = "print(sorted({line.strip().split(':', 2)[2] for line in open('/proc/self/cgroup')}))"
    notebook_id, (cell,) = await weft.notebook(probe)
    out = text_of(await weft.run_and_wait(notebook_id, cell))
    # In its own namespace the kernel's cgroups are the root: no host path, no container id.
    assert out.strip() == "['/']", out
    (container,) = docker_engine.containers.list(filters={"label": f"weft.notebook={notebook_id}"})
    assert container.attrs["HostConfig"]["CgroupnsMode"] == "private"


# -- 4. losing access ends the code one ran ---------------------------------------------

GUEST_CODE = (
    "import builtins, threading, time\n"
    "real = builtins.print\n"
    "builtins.print = lambda *a, **k: real('guest was here', **k)\n"
    "def spam():\n"
    "    while True:\n"
    "        real('still here', flush=True)\n"
    "        time.sleep(0.2)\n"
    "threading.Thread(target=spam, daemon=True).start()\n"
)


async def test_losing_access_restarts_the_kernel_the_guest_ran_code_in(weft: Weft):
    workspace = await weft.workspace()
    notebook_id, (guest_cell, owner_cell) = await weft.notebook(
        GUEST_CODE, "print('owner')", workspace_id=workspace
    )
    made = await weft.api.post(
        f"/api/workspaces/{workspace}/links", json={"role": "editor", "notebook_id": notebook_id}
    )
    link = made.json()
    async with httpx.AsyncClient(base_url=weft.server.url, timeout=30) as anonymous:
        accepted = await anonymous.post(f"/api/links/{link['token']}/accept", json={"name": "Gus"})
    guest = accepted.json()
    headers = {"Authorization": f"Bearer {guest['token']}"}
    async with httpx.AsyncClient(base_url=weft.server.url, timeout=30, headers=headers) as gus:
        started = await gus.post(f"/api/notebooks/{notebook_id}/cells/{guest_cell}/run", json={})
        assert started.status_code == 202, started.text
    await weft.wait(started.json()["run_id"])
    state = await doc_state(weft, notebook_id)
    # The run state names the person by user id (a display name is anyone's to choose).
    assert state["runs"][guest_cell]["by"] == guest["user"]["id"]
    assert state["runs"][guest_cell]["by_name"] == "Gus"
    patched = await weft.run_and_wait(notebook_id, owner_cell)
    assert "guest was here" in text_of(patched)  # what the guest's code does to the kernel
    async with healthz_stays_fast(weft):
        assert (await weft.api.delete(f"/api/links/{link['id']}")).status_code == 204
        with anyio.fail_after(20):
            while "Gus can no longer run code" not in str(
                (await doc_state(weft, notebook_id))["kernel"].get("reason")
            ):
                await anyio.sleep(0.3)
    after = await weft.run_and_wait(notebook_id, owner_cell)
    assert text_of(after) == "owner\n"  # a fresh kernel: no patch, no thread


async def test_lowering_a_members_role_restarts_their_kernels(weft: Weft):
    workspace = await weft.workspace()
    notebook_id, (cell, owner_cell) = await weft.notebook(
        GUEST_CODE, "print('owner')", workspace_id=workspace
    )
    email = f"eve-{uuid.uuid4().hex[:6]}@example.com"
    async with httpx.AsyncClient(base_url=weft.server.url, timeout=30) as anonymous:
        signed = await anonymous.post(
            "/api/auth/signup",
            json={"email": email, "name": "Eve", "password": "a long passphrase 1"},
        )
    assert signed.status_code in (200, 201), signed.text
    eve = signed.json()
    added = await weft.api.post(
        f"/api/workspaces/{workspace}/members", json={"email": email, "role": "editor"}
    )
    assert added.status_code in (200, 201), added.text
    headers = {"Authorization": f"Bearer {eve['token']}"}
    async with httpx.AsyncClient(base_url=weft.server.url, timeout=30, headers=headers) as api:
        started = await api.post(f"/api/notebooks/{notebook_id}/cells/{cell}/run", json={})
        assert started.status_code == 202, started.text
    await weft.wait(started.json()["run_id"])
    lowered = await weft.api.patch(
        f"/api/workspaces/{workspace}/members/{eve['user']['id']}", json={"role": "viewer"}
    )
    assert lowered.status_code in (200, 204), lowered.text
    with anyio.fail_after(20):
        while "Eve can no longer run code" not in str(
            (await doc_state(weft, notebook_id))["kernel"].get("reason")
        ):
            await anyio.sleep(0.3)
    assert text_of(await weft.run_and_wait(notebook_id, owner_cell)) == "owner\n"


# -- 5. sharp edges ---------------------------------------------------------------------


async def test_a_second_interrupt_offers_to_kill_a_cell_that_ignores_interrupts(weft: Weft):
    stuck = (
        "import signal, time\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
        "print('stuck', flush=True)\n"
        "time.sleep(60)"
    )
    notebook_id, (cell,) = await weft.notebook(stuck)
    run_id = await weft.run(notebook_id, cell)
    with anyio.fail_after(30):
        while "stuck" not in json.dumps(await cell_outputs(weft, notebook_id, cell)):
            await anyio.sleep(0.2)
    first = (await weft.api.post(f"/api/notebooks/{notebook_id}/interrupt", json={})).json()
    assert first["interrupted"] == 1
    assert first["kill_offered"] is False
    await anyio.sleep(1.5)
    assert (await weft.api.get(f"/api/runs/{run_id}")).json()["state"] == "running"
    second = (await weft.api.post(f"/api/notebooks/{notebook_id}/interrupt", json={})).json()
    assert second["kill_offered"] is True
    started = time.monotonic()
    killed = await weft.api.post(f"/api/notebooks/{notebook_id}/interrupt", json={"kill": True})
    assert killed.status_code == 200
    run = await weft.wait(run_id, timeout=10)
    assert time.monotonic() - started < 5  # not the cell's time limit
    assert run["state"] == "error"
    assert "Olive Owner killed the kernel: its cell did not stop when interrupted" in run["error"]
    await still_fine(weft, notebook_id, cell)


async def test_running_out_of_pids_is_named_in_the_error(weft: Weft):
    notebook_id, (threads, later) = await weft.notebook(
        "import threading, time\n"
        "started = 0\n"
        "try:\n"
        "    for _ in range(500):\n"
        "        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "        started += 1\n"
        "except RuntimeError:\n"
        "    pass\n"
        "print(started < 500)",
        "import subprocess\nsubprocess.run(['true'])",
    )
    assert text_of(await weft.run_and_wait(notebook_id, threads)) == "True\n"
    run = await weft.run_and_wait(notebook_id, later)
    assert run["state"] == "error"
    assert "limit of 64 processes and threads" in text_of(run), text_of(run)
    assert "WEFT_KERNEL_PIDS" in text_of(run)
