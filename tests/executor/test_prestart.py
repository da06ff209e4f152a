"""A notebook's kernel starts when a person who may run code opens it, so the first commit
finds it ready (executor.prestart); a viewer's visit starts nothing."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import docker
import pytest
from pycrdt import Map

from tests.conftest import PASSWORD, StartServer
from tests.executor.conftest import Weft, running_weft, text_of
from tests.support.pyclient import py_client

pytestmark = pytest.mark.anyio


def prestarting(
    docker_engine: docker.DockerClient, start_server: StartServer, **env: str
) -> contextlib.AbstractAsyncContextManager[Weft]:
    """A server with the product's default (kernels start when an editor opens a notebook)
    and ``env``; its kernels and workspaces removed afterwards."""
    return running_weft(docker_engine, start_server, WEFT_KERNEL_PRESTART="on", **env)


@pytest.fixture
async def weft(
    docker_engine: docker.DockerClient, start_server: StartServer
) -> AsyncIterator[Weft]:
    async with prestarting(docker_engine, start_server) as server:
        yield server


def kernels_of(client: docker.DockerClient, notebook_id: str) -> list[Any]:
    return client.containers.list(filters={"label": f"weft.notebook={notebook_id}"})


async def test_an_editor_opening_a_notebook_starts_its_kernel_before_any_commit(
    weft: Weft, docker_engine: docker.DockerClient
) -> None:
    notebook_id, (cell,) = await weft.notebook("import os\nprint(os.getpid())")
    assert kernels_of(docker_engine, notebook_id) == []  # nobody has opened it yet
    async with py_client(weft.server.ws_base, notebook_id, token=weft.server.token) as person:
        kernel = person.doc.get("kernel", type=Map)
        with anyio.fail_after(60):
            while kernel.get("state") != "idle":
                await anyio.sleep(0.05)
        (container,) = kernels_of(docker_engine, notebook_id)
        assert container.attrs["HostConfig"]["NetworkMode"] == "none"
        run = await weft.run_and_wait(notebook_id, cell)
        assert run["state"] == "done", run
        # The commit ran in the kernel that was started on open, not in a new one.
        (same,) = kernels_of(docker_engine, notebook_id)
        assert same.id == container.id
        assert text_of(run).strip().isdigit()


async def test_a_viewer_opening_a_notebook_starts_no_kernel(
    weft: Weft, docker_engine: docker.DockerClient
) -> None:
    workspace = await weft.workspace()
    notebook_id, (cell,) = await weft.notebook("1 + 1", workspace_id=workspace)
    email = f"viewer-{uuid.uuid4().hex[:6]}@example.org"
    signed = await weft.api.post(
        "/api/auth/signup", json={"email": email, "name": "Vera", "password": PASSWORD}
    )
    assert signed.status_code == 201, signed.text
    added = await weft.api.post(
        f"/api/workspaces/{workspace}/members", json={"email": email, "role": "viewer"}
    )
    assert added.status_code in (200, 201), added.text
    token = signed.json()["token"]
    async with py_client(weft.server.ws_base, notebook_id, token=token) as viewer:
        await anyio.sleep(3)  # long enough for a start on open to show (the test above)
        assert kernels_of(docker_engine, notebook_id) == []
        assert viewer.doc.get("kernel", type=Map).get("state") is None
    # The owner's first commit still starts one.
    run = await weft.run_and_wait(notebook_id, cell)
    assert text_of(run) == "2"


async def test_opening_a_notebook_while_every_kernel_slot_is_taken_evicts_nobody(
    docker_engine: docker.DockerClient, start_server: StartServer
) -> None:
    async with prestarting(docker_engine, start_server, WEFT_MAX_KERNELS="1") as weft:
        first, (a,) = await weft.notebook("x = 1")
        second, _ = await weft.notebook("y = 2")
        assert (await weft.run_and_wait(first, a))["state"] == "done"
        (held,) = kernels_of(docker_engine, first)
        async with py_client(weft.server.ws_base, second, token=weft.server.token):
            await anyio.sleep(3)
            assert kernels_of(docker_engine, second) == []
            assert [c.id for c in kernels_of(docker_engine, first)] == [held.id]


async def test_the_start_on_open_waits_for_the_browser_and_a_commit_meanwhile_starts_one_kernel(
    docker_engine: docker.DockerClient, start_server: StartServer
) -> None:
    # The joining browser loads the notebook first (WEFT_KERNEL_PRESTART_DELAY_SECONDS): on
    # a small node a container's start competes with that for the CPU.
    async with prestarting(
        docker_engine, start_server, WEFT_KERNEL_PRESTART_DELAY_SECONDS="2"
    ) as weft:
        server = weft.server
        waited, _ = await weft.notebook("x = 1")
        async with py_client(server.ws_base, waited, token=server.token) as person:
            await anyio.sleep(1)
            assert kernels_of(docker_engine, waited) == []  # not yet
            kernel = person.doc.get("kernel", type=Map)
            with anyio.fail_after(60):
                while kernel.get("state") != "idle":
                    await anyio.sleep(0.05)
            assert len(kernels_of(docker_engine, waited)) == 1
        # A commit right after opening starts the kernel itself; the start on open, due
        # after it, finds that kernel and starts no second one.
        committed, (cell,) = await weft.notebook("import os\nprint(os.getpid())")
        async with py_client(server.ws_base, committed, token=server.token):
            run = await weft.run_and_wait(committed, cell)
            assert run["state"] == "done", run
            await anyio.sleep(3)
            (container,) = kernels_of(docker_engine, committed)
            again = await weft.run_and_wait(committed, cell)
            assert text_of(again) == text_of(run)  # the same kernel process
            assert [c.id for c in kernels_of(docker_engine, committed)] == [container.id]
