"""Registered runtime images (WEFT_KERNEL_IMAGES) and a notebook's choice among them: the
format, its errors at startup, and what a hostile document's choice gives; then, with a real
engine, a notebook's kernel started from the second image it chose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import docker
import pytest
from pycrdt import Map

from collab.settings import Settings, SettingsError
from executor.config import ExecutorSettings
from executor.environments.errors import EnvironmentFailure
from executor.environments.images import RuntimeImage, RuntimeImages
from executor.environments.requirements import parse_requirements
from executor.environments.resolver import Package
from executor.environments.runtime import Runtime
from executor.environments.store import environment_key
from tests.conftest import StartServer, token_of
from tests.executor.conftest import IMAGE, ROOT, Weft, running_weft, text_of
from tests.support.pyclient import py_client


def settings_from(env: dict[str, str], tmp_path: Path) -> ExecutorSettings:
    return ExecutorSettings.from_env(Settings.from_env({"WEFT_STATE_DIR": str(tmp_path)}), env)


def test_the_default_image_is_always_offered_first_as_default(tmp_path: Path) -> None:
    settings = settings_from(
        {
            "WEFT_KERNEL_IMAGE": "weft-runtime:1",
            "WEFT_KERNEL_IMAGES": " gpu = registry.example:5000/weft-gpu:3 ,slim=weft-slim@sha256:"
            + "a" * 64
            + ",",
        },
        tmp_path,
    )
    runtimes = settings.runtimes
    assert runtimes.names == ["default", "gpu", "slim"]
    assert runtimes.default == RuntimeImage("default", "weft-runtime:1")
    assert runtimes.describe()[1] == {
        "name": "gpu",
        "image": "registry.example:5000/weft-gpu:3",
        "default": False,
    }
    assert settings_from({}, tmp_path).runtimes.names == ["default"]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("gpu", "name=image pairs"),
        ("gpu=", "name=image pairs"),
        ("=weft-gpu", "name=image pairs"),
        ("GPU=weft-gpu", "lower-case"),
        ("a b=weft-gpu", "lower-case"),
        ("default=weft-other", "set WEFT_KERNEL_IMAGE"),
        ("gpu=a,gpu=b", "twice"),
        ("gpu=weft gpu", "Docker image reference"),
        ("gpu=-rm", "Docker image reference"),
    ],
)
def test_a_malformed_value_fails_at_startup_naming_the_fix(
    tmp_path: Path, value: str, words: str
) -> None:
    with pytest.raises(SettingsError, match="WEFT_KERNEL_IMAGES") as raised:
        settings_from({"WEFT_KERNEL_IMAGES": value}, tmp_path)
    assert words in str(raised.value)


IMAGES = RuntimeImages.parse("weft-runtime:1", "gpu=weft-gpu:3")


@pytest.mark.parametrize(
    ("chosen", "image"),
    [
        (None, "weft-runtime:1"),
        ("", "weft-runtime:1"),
        ("default", "weft-runtime:1"),
        ("gpu", "weft-gpu:3"),
    ],
)
def test_a_registered_name_chooses_its_image(chosen: Any, image: str) -> None:
    metadata = {} if chosen is None else {"runtime": chosen}
    assert IMAGES.choose(metadata).image == image


@pytest.mark.parametrize(
    "chosen",
    [
        "weft-gpu:3",  # an image reference is not a name
        "GPU",
        "gpu ",
        "x" * 1_000_000,
        ["gpu"],
        {"name": "gpu"},
        3,
        True,
    ],
)
def test_anything_else_is_an_error_naming_the_choices(chosen: Any) -> None:
    with pytest.raises(EnvironmentFailure) as raised:
        IMAGES.choose({"runtime": chosen})
    failure = raised.value
    assert failure.kind == "runtime"
    assert "choose one of: default, gpu" in failure.message
    assert len(failure.message) < 300  # a huge value is not echoed
    assert "weft-gpu:3" not in failure.message or chosen == "weft-gpu:3"


def test_hostile_dependencies_are_refused_with_a_short_message() -> None:
    for value in ([{"x": "y" * 100_000}], [["tabulate"]], [None], ["ok", 7]):
        with pytest.raises(EnvironmentFailure) as raised:
            parse_requirements(value)
        assert raised.value.kind == "invalid"
        assert "is not a requirement" in raised.value.message
        assert len(raised.value.message) < 200
    with pytest.raises(EnvironmentFailure, match="at most 64"):
        parse_requirements([f"p{i}" for i in range(10_000)])


def runtime(image: str, image_id: str) -> Runtime:
    return Runtime(image, image_id, "3.11.2", "x86_64", (2, 36), {})


def test_another_image_is_another_environment_directory() -> None:
    packages = [Package("weftdemo", "2.0", "a" * 64)]
    one = environment_key(packages, runtime("weft-runtime:1", "sha256:1"))
    assert environment_key(packages, runtime("weft-gpu:3", "sha256:2")) != one
    # The same image under another name is the same bytes: the same directory.
    assert environment_key(packages, runtime("weft-alias:1", "sha256:1")) == one


async def kernel_map(weft: Weft, notebook_id: str) -> dict[str, Any]:
    ws = weft.server.url.replace("http", "ws", 1) + "/ws"
    async with py_client(ws, notebook_id, token=token_of(weft.api)) as client:
        kernel: dict[str, Any] = client.doc.get("kernel", type=Map).to_py()
        return kernel


@pytest.mark.anyio
@pytest.mark.docker
@pytest.mark.timeout(300)
async def test_a_notebook_runs_in_the_runtime_it_chose_and_only_a_registered_one(
    docker_engine: docker.DockerClient, start_server: StartServer, second_runtime_image: str
) -> None:
    async with running_weft(
        docker_engine, start_server, WEFT_KERNEL_IMAGES=f"second={second_runtime_image}"
    ) as weft:
        response = await weft.api.get(
            "/api/notebooks/00000000-0000-0000-0000-000000000000/runtimes"
        )
        assert response.status_code == 404
        notebook_id, (cell,) = await weft.notebook("import sys; print(sys.version_info[:2])")
        response = await weft.api.get(f"/api/notebooks/{notebook_id}/runtimes")
        assert response.status_code == 200, response.text
        assert response.json() == {
            "runtimes": [
                {"name": "default", "image": IMAGE, "default": True},
                {"name": "second", "image": second_runtime_image, "default": False},
            ]
        }
        ws = weft.server.url.replace("http", "ws", 1) + "/ws"

        async def choose(value: Any) -> None:
            async with py_client(ws, notebook_id, token=token_of(weft.api)) as client:
                client.doc.get("meta", type=Map)["metadata"]["runtime"] = value
                await client.flush()
                with anyio.fail_after(10):
                    while True:
                        exported = await weft.api.get(f"/api/notebooks/{notebook_id}/export")
                        if json.loads(exported.content)["metadata"].get("runtime") == value:
                            return
                        await anyio.sleep(0.05)

        await choose("second")
        run = await weft.run_and_wait(notebook_id, cell, timeout=120)
        assert run["state"] == "done", run
        assert "(3, 11)" in text_of(run)
        (container,) = docker_engine.containers.list(
            filters={"label": f"weft.notebook={notebook_id}"}
        )
        assert container.attrs["Config"]["Image"] == second_runtime_image
        assert container.attrs["HostConfig"]["NetworkMode"] == "none"
        assert set(container.attrs["NetworkSettings"]["Networks"]) == {"none"}
        assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True

        # Back to the default: the kernel is restarted from it, as for new dependencies.
        await choose("default")
        response = await weft.api.post(f"/api/notebooks/{notebook_id}/environment", json={})
        assert response.status_code == 200, response.text
        status = await kernel_map(weft, notebook_id)
        assert status.get("restarted") is True
        assert "runtime changed" in status["reason"]
        assert (await weft.run_and_wait(notebook_id, cell, timeout=120))["state"] == "done"
        (container,) = docker_engine.containers.list(
            filters={"label": f"weft.notebook={notebook_id}"}
        )
        assert container.attrs["Config"]["Image"] == IMAGE

        # A name the server does not register (here, an image reference) chooses nothing.
        for hostile in (second_runtime_image, "x" * 100_000, ["second"]):
            await choose(hostile)
            run = await weft.run_and_wait(notebook_id, cell, timeout=120)
            assert run["state"] == "error", run
            assert run["outputs"][-1]["ename"] == "DependencyError"
            assert "choose one of: default, second" in run["outputs"][-1]["evalue"]
            status = await kernel_map(weft, notebook_id)
            assert status["state"] == "dead"
            assert status["environment_error"]["kind"] == "runtime"
            assert "choose one of: default, second" in status["error"]
        response = await weft.api.post(f"/api/notebooks/{notebook_id}/environment", json={})
        assert response.status_code == 422
        assert response.json()["error"]["kind"] == "runtime"


def test_the_server_does_not_start_with_a_malformed_value(tmp_path: Path) -> None:
    env = {**os.environ, "WEFT_STATE_DIR": str(tmp_path), "WEFT_KERNEL_IMAGES": "gpu"}
    done = subprocess.run(
        [sys.executable, "-m", "collab.server.cli", "serve", "--port", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "weft: WEFT_KERNEL_IMAGES must be name=image pairs" in done.stderr
    assert "Traceback" not in done.stderr
