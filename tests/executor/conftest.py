"""Executor fixtures: a real Docker engine and the runtime image are required; without them
these tests fail loudly, naming the script that provides them (they never skip)."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import docker
import httpx
import pytest

from executor.volumes import mounts_under, unmount
from tests.conftest import StartServer, import_code_notebook
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


def runtime_image() -> str:
    """The runtime image built from this checkout's runner (the tag infra/runtime/
    build-offline.sh gives it), not whatever `latest` another checkout built last."""
    inputs = ("requirements.txt", "build-offline.sh", "Dockerfile")
    paths = [ROOT / "infra" / "runtime" / name for name in inputs]
    paths.append(ROOT / "executor" / "runner.py")
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in paths)).hexdigest()
    return f"weft-runtime:{digest[:12]}"


IMAGE = runtime_image()

# Small limits so containment tests are quick.
EXECUTOR_ENV = {
    "WEFT_KERNEL_IMAGE": IMAGE,
    "WEFT_KERNEL_MEMORY_MB": "256",
    "WEFT_KERNEL_PIDS": "64",
    # Long enough for `import matplotlib` on a busy 2-core machine; the containment tests
    # wait for it to end runaway cells.
    "WEFT_CELL_TIMEOUT_SECONDS": "10",
    "WEFT_INTERRUPT_GRACE_SECONDS": "2",
    "WEFT_RUN_LEASE_SECONDS": "3",
}


@pytest.fixture(scope="session")
def docker_engine() -> docker.DockerClient:
    try:
        client = docker.from_env(version="auto")
        client.ping()
    except Exception as exc:
        pytest.fail(
            f"no Docker engine answers ({exc}): run scripts/ensure-docker.sh", pytrace=False
        )
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{IMAGE} is missing: run scripts/ensure-runtime-image.sh", pytrace=False)
    return client


@pytest.fixture
def second_runtime_image(docker_engine: docker.DockerClient) -> Iterator[str]:
    """The runtime image under a second name, for WEFT_KERNEL_IMAGES (a tag: cheap, no
    rebuild), removed afterwards (the tag only: the image stays)."""
    name = f"weft-runtime-second:{uuid.uuid4().hex[:8]}"
    docker_engine.images.get(IMAGE).tag(name)
    try:
        yield name
    finally:
        docker_engine.images.remove(name, noprune=True)


@dataclass
class Weft:
    """A running server with an API client, and helpers to make notebooks and run cells."""

    server: ServerProcess
    api: httpx.AsyncClient

    async def workspace(self, name: str = "ws") -> str:
        response = await self.api.post("/api/workspaces", json={"name": name})
        workspace_id: str = response.json()["id"]
        return workspace_id

    async def notebook(
        self, *sources: str | tuple[str, dict[str, Any]], workspace_id: str | None = None
    ) -> tuple[str, list[str]]:
        """A notebook whose code cells hold ``sources``; returns its id and the cell ids."""
        workspace_id = workspace_id or await self.workspace()
        return await import_code_notebook(self.api, workspace_id, sources)

    async def run(self, notebook_id: str, cell_id: str, source: str | None = None) -> str:
        body = {} if source is None else {"source": source}
        response = await self.api.post(
            f"/api/notebooks/{notebook_id}/cells/{cell_id}/run", json=body
        )
        assert response.status_code == 202, response.text
        run_id: str = response.json()["run_id"]
        return run_id

    async def wait(self, run_id: str, timeout: float = 60) -> dict[str, Any]:
        with anyio.fail_after(timeout):
            while True:
                run: dict[str, Any] = (await self.api.get(f"/api/runs/{run_id}")).json()
                if run["state"] in ("done", "error", "cancelled"):
                    return run
                await anyio.sleep(0.05)

    async def run_and_wait(
        self, notebook_id: str, cell_id: str, source: str | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        return await self.wait(await self.run(notebook_id, cell_id, source), timeout)


def text_of(run: dict[str, Any]) -> str:
    """All stream text and plain-text results of a run."""
    parts = []
    for output in run["outputs"]:
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif output["output_type"] in ("execute_result", "display_data"):
            parts.append(str(output["data"].get("text/plain", "")))
        elif output["output_type"] == "error":
            parts.append(f"{output['ename']}: {output['evalue']}")
    return "".join(parts)


def remove_kernels(client: docker.DockerClient, instance: str) -> None:
    for container in client.containers.list(
        all=True, filters={"label": f"weft.instance={instance}"}
    ):
        container.remove(force=True)


@contextlib.asynccontextmanager
async def running_weft(
    docker_engine: docker.DockerClient, start_server: StartServer, **env: str
) -> AsyncIterator[Weft]:
    """A server with the executor (EXECUTOR_ENV, then ``env``); its kernels go with it."""
    instance = f"weft-test-{uuid.uuid4().hex[:8]}"
    server = await start_server(**{**EXECUTOR_ENV, **env}, WEFT_INSTANCE=instance)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=server.auth) as api:
            yield Weft(server, api)
    finally:
        server.stop()
        remove_kernels(docker_engine, instance)
        unmount_workspaces(server.state_dir)


@pytest.fixture
async def weft(
    docker_engine: docker.DockerClient, start_server: StartServer
) -> AsyncIterator[Weft]:
    async with running_weft(docker_engine, start_server) as weft:
        yield weft


@pytest.fixture(autouse=True)
def _no_mounts_left(tmp_path: Path) -> Iterator[None]:
    """Workspace filesystems a test's killed servers or workers left mounted are unmounted."""
    yield
    unmount_workspaces(tmp_path)


def unmount_workspaces(state_dir: Path) -> None:
    """Workspace filesystems a killed server left mounted (a stopped one unmounts its own)."""
    for folder in mounts_under(state_dir):
        unmount(folder)
