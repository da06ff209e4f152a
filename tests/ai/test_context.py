"""What the model is told, end to end: a real server, the real executor (Docker) running
the cells, files uploaded to the workspace, and the request the provider received."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator

import anyio
import docker
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.ai.conftest import API_KEY, assist, assistant_env, notebook_with, wait_state
from tests.conftest import StartServer
from tests.executor.conftest import EXECUTOR_ENV, docker_engine, remove_kernels
from tests.support.openai_server import FakeOpenAI, stream

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

__all__ = ["docker_engine"]  # the fixture, shared with the executor's tests


@pytest.fixture
async def api_with_executor(
    docker_engine: docker.DockerClient, start_server: StartServer, fake: FakeOpenAI
) -> AsyncIterator[httpx.AsyncClient]:
    instance = f"weft-test-{uuid.uuid4().hex[:8]}"
    env = {**assistant_env(fake), **EXECUTOR_ENV, "WEFT_EXECUTOR": "on"}
    server = await start_server(**env, WEFT_INSTANCE=instance)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=server.auth) as api:
            yield api
        assert API_KEY not in server.log_text()
    finally:
        server.stop()
        remove_kernels(docker_engine, instance)


async def run(api: httpx.AsyncClient, notebook_id: str, cell_id: str) -> dict[str, object]:
    response = await api.post(f"/api/notebooks/{notebook_id}/cells/{cell_id}/run", json={})
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    with anyio.fail_after(90):
        while True:
            state: dict[str, object] = (await api.get(f"/api/runs/{run_id}")).json()
            if state["state"] in ("done", "error", "cancelled"):
                return state
            await anyio.sleep(0.05)


async def test_the_request_holds_schemas_from_above_files_and_the_error_to_fix(
    api_with_executor: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    api = api_with_executor
    notebook_id, workspace_id, cells = await notebook_with(
        api,
        "import pandas as pd\n"
        "sales = pd.DataFrame({'month': ['2024-01', '2024-02'], 'revenue': [120.5, 98.0]})",
        "",
        "hidden = pd.DataFrame({'secret_column': [1, 2, 3]})",
        "sales['Revenue'].sum()",
    )
    above, target, below, broken = cells
    csv = b"region,units,price\nnorth,3,9.5\nsouth,4,7.25\n"
    await api.post(f"/api/workspaces/{workspace_id}/folders", json={"path": "data"})
    put = await api.put(f"/api/workspaces/{workspace_id}/files/data/regions.csv", content=csv)
    assert put.status_code == 201, put.text
    buffer = io.BytesIO()
    pq.write_table(pa.table({"sku": ["a", "b"], "weight_kg": [1.5, 2.0]}), buffer)
    put = await api.put(
        f"/api/workspaces/{workspace_id}/files/catalog.parquet", content=buffer.getvalue()
    )
    assert put.status_code == 201, put.text
    for cell in (above, below):
        assert (await run(api, notebook_id, cell))["state"] == "done"
    assert (await run(api, notebook_id, broken))["state"] == "error"

    fake.script(stream("sales.plot(x='month', y='revenue')"))
    generation_id = await assist(api, notebook_id, target, "plot revenue by month")
    await wait_state(api, generation_id, "pending")
    request = fake.bodies()[0]["messages"][-1]["content"]
    # The DataFrame defined above, with its schema and a sample; not the one below.
    assert "- sales: pandas" in request
    assert "DataFrame, 2 rows (cell 1)" in request
    assert "revenue (float64)" in request
    assert '"revenue": 120.5' in request
    assert "secret_column (int64)" not in request
    assert "- hidden:" not in request
    # The workspace's files with their schemas.
    assert "- data/regions.csv (" in request
    assert "columns: region (string), units (int64), price (double)" in request
    assert "- catalog.parquet (" in request
    assert "parquet, 2 rows" in request
    assert "columns: sku (string), weight_kg (double)" in request

    fake.script(stream("```python\nsales['revenue'].sum()\n```"))
    fix = await assist(api, notebook_id, broken, "", mode="fix")
    fixed = await wait_state(api, fix, "pending")
    assert fixed["code"] == "sales['revenue'].sum()"
    request = fake.bodies()[1]["messages"][-1]["content"]
    assert "failed when it last ran" in request
    assert "KeyError: 'Revenue'" in request
    assert "sales['Revenue'].sum()" in request  # the broken cell, whole
    # Names from every cell above the fixed one; still not from below it (none here).
    assert "- hidden: pandas" in request
    assert "DataFrame, 3 rows (cell 3)" in request
    accepted = await api.post(f"/api/generations/{fix}/accept")
    assert accepted.status_code == 200
    assert (await run(api, notebook_id, broken))["state"] == "done"
