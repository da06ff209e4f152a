"""Per-notebook environments end to end: a real server, real Docker, and a real package
index (PEP 503/691) on 127.0.0.1 holding real wheels (built here, and tabulate from PyPI,
fetched by scripts/setup.sh --dev). The kernels never have network."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import docker
import httpx
import pytest
from pycrdt import Map

from tests.conftest import StartServer, token_of
from tests.executor.conftest import EXECUTOR_ENV, Weft, remove_kernels, text_of, unmount_workspaces
from tests.support.package_index import SETUP_WHEELS, PackageIndex, build_sdist, build_wheel
from tests.support.pyclient import py_client

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

TABULATE = "tabulate-0.10.0-py3-none-any.whl"


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    folder = tmp_path / "index"
    build_wheel(folder, "weftdemo", "1.0")
    build_wheel(
        folder,
        "weftdemo",
        "2.0",
        requires=["weftdep>=1"],
        files={"weftdemo/__init__.py": "import weftdep\nVERSION = '2.0'\n"},
    )
    build_wheel(folder, "weftdep", "0.5")
    build_wheel(folder, "weftdep", "1.5")
    build_wheel(folder, "weftmac", "1.0", tag="cp311-cp311-macosx_11_0_arm64")
    build_sdist(folder, "weftsrc", "1.0")
    real = SETUP_WHEELS / TABULATE
    if not real.exists():
        pytest.fail(f"{real} is missing: run scripts/setup.sh --dev", pytrace=False)
    (folder / TABULATE).write_bytes(real.read_bytes())
    return folder


@pytest.fixture
def index(wheels: Path) -> Iterator[PackageIndex]:
    with PackageIndex(wheels) as served:
        yield served


@pytest.fixture
async def weft(
    docker_engine: docker.DockerClient, start_server: StartServer, index: PackageIndex
) -> AsyncIterator[Weft]:
    instance = f"weft-test-{uuid.uuid4().hex[:8]}"
    server = await start_server(
        **{
            **EXECUTOR_ENV,
            # Importing scipy, scikit-learn, plotly... at once takes seconds on a busy machine.
            "WEFT_CELL_TIMEOUT_SECONDS": "120",
        },
        WEFT_INSTANCE=instance,
        WEFT_PACKAGE_INDEX_URL=index.url,
    )
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=120, headers=server.auth) as api:
            yield Weft(server, api)
    finally:
        server.stop()
        remove_kernels(docker_engine, instance)
        unmount_workspaces(server.state_dir)


async def notebook_with(
    weft: Weft,
    dependencies: list[str] | None,
    *sources: str,
    metadata: dict[str, Any] | None = None,
) -> tuple[str, list[str]]:
    workspace_id = await weft.workspace()
    cells = [
        {
            "id": f"c{i}",
            "cell_type": "code",
            "source": source,
            "metadata": {},
            "outputs": [],
            "execution_count": None,
        }
        for i, source in enumerate(sources)
    ]
    meta = {**(metadata or {})}
    if dependencies is not None:
        meta["dependencies"] = dependencies
    notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": meta, "cells": cells}
    response = await weft.api.post(
        f"/api/workspaces/{workspace_id}/notebooks/import", content=json.dumps(notebook)
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"]), [c["id"] for c in cells]


async def exported(weft: Weft, notebook_id: str) -> dict[str, Any]:
    response = await weft.api.get(f"/api/notebooks/{notebook_id}/export")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = json.loads(response.content)
    return data


def kernel_container(client: docker.DockerClient, notebook_id: str) -> Any:
    found = client.containers.list(filters={"label": f"weft.notebook={notebook_id}"})
    assert len(found) == 1, found
    return found[0]


def env_mount(container: Any) -> dict[str, Any]:
    mounts = [m for m in container.attrs["Mounts"] if m["Destination"] == "/opt/weft-env"]
    assert len(mounts) == 1, container.attrs["Mounts"]
    return dict(mounts[0])


async def test_a_declared_package_imports_in_a_kernel_without_network(
    weft: Weft, docker_engine: docker.DockerClient, index: PackageIndex
) -> None:
    notebook_id, (cell, write) = await notebook_with(
        weft,
        ["tabulate", "weftdemo"],
        "import tabulate, weftdemo, weftdep\n"
        "print(tabulate.tabulate([[1, 2]], headers=['a', 'b']))\n"
        "print('versions', tabulate.__version__, weftdemo.VERSION, weftdep.VERSION)",
        "open('/opt/weft-env/weftdemo/x.py', 'w')",
    )
    run = await weft.run_and_wait(notebook_id, cell, timeout=180)
    assert run["state"] == "done", run
    assert "versions 0.10.0 2.0 1.5" in text_of(run)
    assert "a    b" in text_of(run)  # tabulate really ran

    container = kernel_container(docker_engine, notebook_id)
    container.reload()
    assert container.attrs["HostConfig"]["NetworkMode"] == "none"
    networks = container.attrs["NetworkSettings"]["Networks"]
    assert set(networks) == {"none"}, networks
    mount = env_mount(container)
    assert mount["RW"] is False
    assert mount["Mode"] == "ro"
    assert "/environments/sets/" in mount["Source"]
    assert container.attrs["Config"]["Env"].count("PYTHONPATH=/opt/weft-env") == 1

    # Read-only for the kernel, even for a cell that tries.
    run = await weft.run_and_wait(notebook_id, write)
    assert run["state"] == "error"
    assert "Read-only file system" in text_of(run)

    # The resolved set is recorded next to the request, exported with the notebook.
    meta = (await exported(weft, notebook_id))["metadata"]
    assert meta["dependencies"] == ["tabulate", "weftdemo"]
    record = meta["environment"]
    assert record["request"] == ["tabulate", "weftdemo"]
    packages = {p["name"]: p for p in record["packages"]}
    assert {n: p["version"] for n, p in packages.items()} == {
        "tabulate": "0.10.0",
        "weftdemo": "2.0",
        "weftdep": "1.5",
    }
    assert all(len(p["sha256"]) == 64 and not p["in_runtime"] for p in packages.values())
    assert record["runtime"]["python"].startswith("3.11")
    assert record["runtime"]["platform"].startswith("manylinux_2_")
    assert record["key"]
    assert record["key"] in mount["Source"]


async def test_two_notebooks_share_one_directory_and_a_copy_keeps_the_recorded_versions(
    weft: Weft, docker_engine: docker.DockerClient, index: PackageIndex, wheels: Path
) -> None:
    code = "import weftdemo; print('v', weftdemo.VERSION)"
    first, (cell1,) = await notebook_with(weft, ["weftdemo"], code)
    second, (cell2,) = await notebook_with(weft, ["weftdemo"], code)
    assert "v 2.0" in text_of(await weft.run_and_wait(first, cell1, timeout=180))
    asked = len(index.requests)
    assert "v 2.0" in text_of(await weft.run_and_wait(second, cell2, timeout=180))
    assert len(index.requests) == asked  # the same request: nothing asked of the index
    source_1 = env_mount(kernel_container(docker_engine, first))["Source"]
    source_2 = env_mount(kernel_container(docker_engine, second))["Source"]
    assert source_1 == source_2
    sets = weft.server.state_dir / "environments" / "sets"
    assert [p.name for p in sets.iterdir() if p.is_dir()] == [Path(source_1).name]  # built once

    # A newer release appears on the index: a copy of the first notebook keeps 2.0 ...
    build_wheel(wheels, "weftdemo", "3.0", files={"weftdemo/__init__.py": "VERSION = '3.0'\n"})
    response = await weft.api.post(f"/api/notebooks/{first}/copy", json={"title": "copy"})
    assert response.status_code == 201, response.text
    copy = response.json()["id"]
    assert "v 2.0" in text_of(await weft.run_and_wait(copy, cell1, timeout=180))
    assert env_mount(kernel_container(docker_engine, copy))["Source"] == source_1

    # ... while a new request (no record, no recent resolution) gets 3.0,
    fresh, (cell3,) = await notebook_with(weft, ["weftdemo>=2"], code)
    assert "v 3.0" in text_of(await weft.run_and_wait(fresh, cell3, timeout=180))

    # and the copy moves to 3.0 when someone asks to update, restarting its kernel.
    response = await weft.api.post(f"/api/notebooks/{copy}/environment", json={"update": True})
    assert response.status_code == 200, response.text
    assert "v 3.0" in text_of(await weft.run_and_wait(copy, cell1, timeout=180))
    record = (await exported(weft, copy))["metadata"]["environment"]
    assert {p["name"]: p["version"] for p in record["packages"]} == {"weftdemo": "3.0"}


@pytest.mark.parametrize(
    ("requirement", "kind", "words"),
    [
        ("nosuchpackage", "unknown", "no package named 'nosuchpackage'"),
        ("weftdemo>=9", "no-version", "no version of weftdemo matches"),
        ("weftmac", "no-wheel", "macosx"),
        ("weftsrc", "no-wheel", "only source archives"),
        ("weftdep @ http://169.254.169.254/x.whl", "invalid", "names a URL"),
        ("--index-url=http://elsewhere", "invalid", "installer option"),
    ],
)
async def test_a_bad_requirement_gives_a_named_error(
    weft: Weft, requirement: str, kind: str, words: str
) -> None:
    notebook_id, (cell,) = await notebook_with(weft, ["tabulate", requirement], "print(1)")
    run = await weft.run_and_wait(notebook_id, cell, timeout=180)
    assert run["state"] == "error"
    error = run["outputs"][-1]
    assert error["ename"] == "DependencyError", run
    assert words in error["evalue"], error["evalue"]
    status = await kernel_status(weft, notebook_id)
    assert status["state"] == "dead"
    assert status["environment_error"]["kind"] == kind
    if kind != "invalid":
        assert requirement.split()[0] in status["environment_error"]["requirement"]


async def test_conflicting_requirements_name_both_sides(weft: Weft) -> None:
    notebook_id, (cell,) = await notebook_with(weft, ["weftdemo==2.0", "weftdep<1"], "print(1)")
    run = await weft.run_and_wait(notebook_id, cell, timeout=180)
    assert run["state"] == "error"
    message = run["outputs"][-1]["evalue"]
    for words in ("conflict", "weftdep>=1", "weftdep<1"):
        assert words in message, message
    status = await kernel_status(weft, notebook_id)
    assert status["environment_error"]["kind"] == "conflict"


async def kernel_status(weft: Weft, notebook_id: str) -> dict[str, Any]:
    """The notebook's kernel map, as a collaborator's document holds it."""
    ws = weft.server.url.replace("http", "ws", 1) + "/ws"
    async with py_client(ws, notebook_id, token=token_of(weft.api)) as client:
        kernel: dict[str, Any] = client.doc.get("kernel", type=Map).to_py()
        return kernel


async def test_changing_the_dependencies_restarts_the_kernel(
    weft: Weft, docker_engine: docker.DockerClient
) -> None:
    notebook_id, (first, second) = await notebook_with(
        weft, ["weftdemo==1.0"], "x = 1", "import weftdemo; print(weftdemo.VERSION, x)"
    )
    assert (await weft.run_and_wait(notebook_id, first, timeout=180))["state"] == "done"
    assert "1.0 1" in text_of(await weft.run_and_wait(notebook_id, second))
    ws = weft.server.url.replace("http", "ws", 1) + "/ws"
    async with py_client(ws, notebook_id, token=token_of(weft.api)) as client:
        metadata = client.doc.get("meta", type=Map)["metadata"]
        metadata["dependencies"] = ["weftdemo==2.0"]
        await client.flush()
        with anyio.fail_after(10):
            while True:
                record = (await exported(weft, notebook_id))["metadata"]
                if record["dependencies"] == ["weftdemo==2.0"]:
                    break
                await anyio.sleep(0.05)
    response = await weft.api.post(f"/api/notebooks/{notebook_id}/environment", json={})
    assert response.status_code == 200, response.text
    status = await kernel_status(weft, notebook_id)
    assert status.get("restarted") is True
    assert "dependencies changed" in status["reason"]
    run = await weft.run_and_wait(notebook_id, second)
    assert run["state"] == "error"
    assert "NameError" in text_of(run)
    assert (await weft.run_and_wait(notebook_id, first))["state"] == "done"
    assert "2.0 1" in text_of(await weft.run_and_wait(notebook_id, second))


async def test_pip_magic_adds_the_dependency_and_the_cell_imports_it(
    weft: Weft, docker_engine: docker.DockerClient
) -> None:
    notebook_id, (first, cell) = await notebook_with(
        weft,
        None,
        "x = 1",
        "%pip install tabulate\n"
        "import tabulate\n"
        "print('tabulate', tabulate.__version__)\n"
        "!ls /opt/weft-env | grep -c tabulate\n"
        "%timeit -n 10 -r 2 tabulate.tabulate([[1]])",
    )
    assert (await weft.run_and_wait(notebook_id, first, timeout=180))["state"] == "done"
    run = await weft.run_and_wait(notebook_id, cell, timeout=180)
    assert run["state"] == "done", text_of(run)
    out = text_of(run)
    assert "Added tabulate to this notebook's dependencies" in out
    assert "tabulate 0.10.0" in out
    assert "\n2\n" in out  # the package and its dist-info, seen by a shell in the container
    assert "per loop (mean ± std. dev. of 2 runs, 10 loops each)" in out
    meta = (await exported(weft, notebook_id))["metadata"]
    assert meta["dependencies"] == ["tabulate"]
    assert meta["environment"]["packages"][0]["version"] == "0.10.0"
    container = kernel_container(docker_engine, notebook_id)
    assert container.attrs["HostConfig"]["NetworkMode"] == "none"
    # The kernel restarted with the new environment: the cell above must run again.
    run = await weft.run_and_wait(notebook_id, cell, "print(x)")
    assert "NameError" in text_of(run)
    # Running it again adds nothing and says so.
    run = await weft.run_and_wait(notebook_id, cell, "%pip install tabulate")
    assert "Already in this notebook's dependencies" in text_of(run)


async def test_the_default_runtime_displays_ipython_objects_and_has_the_libraries(
    weft: Weft,
) -> None:
    notebook_id, (cell,) = await notebook_with(
        weft,
        None,
        "from IPython.display import HTML, JSON, Image, Markdown, display\n"
        "import altair, plotly, polars, scipy, seaborn, sklearn\n"
        "display(HTML('<b>bold</b>'))\n"
        "display(Markdown('# Title'))\n"
        "display(JSON({'a': 1}))\n"
        "import plotly.express as px\n"
        "px.bar(x=['a', 'b'], y=[1, 2]).show()\n"
        "altair.Chart(polars.DataFrame({'a': [1, 2]})).mark_bar().encode(x='a')",
    )
    run = await weft.run_and_wait(notebook_id, cell, timeout=180)
    assert run["state"] == "done", text_of(run)
    data = [
        o["data"] for o in run["outputs"] if o["output_type"] in ("display_data", "execute_result")
    ]
    assert data[0]["text/html"] == "<b>bold</b>"
    assert data[1]["text/markdown"] == "# Title"
    assert data[2]["application/json"] == {"a": 1}
    assert "application/vnd.plotly.v1+json" in data[3]
    assert any(k.startswith("application/vnd.vegalite") for k in data[4])


async def test_an_imported_notebook_installs_its_recorded_set_and_a_changed_file_is_named(
    weft: Weft, wheels: Path, index: PackageIndex
) -> None:
    # An .ipynb made elsewhere (another server, last year): its record pins weftdemo 1.0,
    # though the index's newest is 2.0; this server has no resolution or wheel of it.
    one = hashlib.sha256((wheels / "weftdemo-1.0-py3-none-any.whl").read_bytes()).hexdigest()
    record = {
        "request": ["weftdemo"],
        "packages": [{"name": "weftdemo", "version": "1.0", "sha256": one, "in_runtime": False}],
        "runtime": {
            "image": "elsewhere",
            "image_id": "sha256:0",
            "python": "3.11.2",
            "platform": "manylinux_2_36_x86_64",
        },
        "resolved_at": "2025-01-01T00:00:00+00:00",
        "key": "0" * 32,
    }
    code = "import weftdemo; print('v', weftdemo.VERSION)"
    notebook_id, (cell,) = await notebook_with(
        weft, ["weftdemo"], code, metadata={"environment": record}
    )
    run = await weft.run_and_wait(notebook_id, cell, timeout=180)
    assert "v 1.0" in text_of(run), text_of(run)
    assert not [r for r in index.requests if r.endswith("weftdemo-2.0-py3-none-any.whl")]

    # A record whose file the index no longer serves names the package and what to do.
    bad = {**record, "packages": [{**record["packages"][0], "sha256": "ab" * 32}]}
    other, (cell2,) = await notebook_with(weft, ["weftdemo"], code, metadata={"environment": bad})
    run = await weft.run_and_wait(other, cell2, timeout=180)
    message = run["outputs"][-1]["evalue"]
    assert "weftdemo==1.0 as recorded cannot be installed" in message, message
    assert "update the environment" in message
    status = await kernel_status(weft, other)
    assert status["environment_error"]["kind"] == "install"
