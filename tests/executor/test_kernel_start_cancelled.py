"""A kernel start cancelled at any moment (an interrupt while it starts, a shutdown) leaves
no container behind: before, one cancelled while the engine made or started the container
left it for good (a test server's instance is never swept), one per cancelled start."""

from __future__ import annotations

import gc
import uuid
from pathlib import Path
from typing import Any

import anyio
import docker
import pytest

from collab.settings import Settings
from executor.config import ExecutorSettings
from executor.kernel import Kernel
from tests.executor.conftest import EXECUTOR_ENV

# A kernel removed after its reader started leaves its message stream and the engine's
# attach socket to the garbage collector (a known leftover of Kernel.remove, reported when
# they are collected, in whichever test that happens): not what this file is about.
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.docker,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.mark.parametrize("after", [0.0, 0.02, 0.05, 0.1, 0.2, 0.3])
async def test_a_cancelled_start_leaves_no_container(
    docker_engine: docker.DockerClient, tmp_path: Path, after: float
) -> None:
    env = {**EXECUTOR_ENV, "WEFT_STATE_DIR": str(tmp_path), "WEFT_INSTANCE": "weft-cancel"}
    settings = ExecutorSettings.from_env(Settings.from_env(env), env)
    notebook_id = uuid.uuid4()
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    started: list[Kernel] = []
    with anyio.move_on_after(after):
        started.append(await Kernel.start(docker_engine, settings, notebook_id, workspace))
    for kernel in started:  # it was ready before the deadline: remove it as the pool does
        await kernel.remove()
    started.clear()
    gc.collect()  # here, where the leftover above is not reported

    def left() -> list[Any]:
        label = f"weft.notebook={notebook_id}"
        return list(docker_engine.containers.list(all=True, filters={"label": label}))

    assert left() == []
