"""Kernel requests through the server and a real kernel container: completions for the names
a cell can see, a DataFrame grid paged, sorted and filtered by the kernel with its view in
the document, who may ask what, and hostile requests that get a clear error without
delaying anyone's runs."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from tests.conftest import StartServer
from tests.executor.conftest import Weft, running_weft
from tests.executor.test_hostile import doc_state

pytestmark = pytest.mark.anyio


@pytest.fixture
async def weft(docker_engine: Any, start_server: StartServer) -> AsyncIterator[Weft]:
    """The executor's server, with time for a million-row frame on a busy machine."""
    async with running_weft(docker_engine, start_server, WEFT_CELL_TIMEOUT_SECONDS="120") as weft:
        yield weft


FRAME = "application/vnd.weft.frame+json"
MILLION = (
    "import pandas as pd, numpy as np\n"
    "alpha_above = 1\n"
    "n = 1_000_000\n"
    "df = pd.DataFrame({'i': np.arange(n), 'v': (np.arange(n) * 7919) % 1000,\n"
    "                   'name': np.array(['north', 'south', 'east', 'west'])[np.arange(n) % 4]})\n"
    "df"
)


async def _person(weft: Weft, workspace: str, name: str, role: str) -> httpx.AsyncClient:
    email = f"{name.lower()}-{time.monotonic_ns()}@example.com"
    async with httpx.AsyncClient(base_url=weft.server.url, timeout=30) as anonymous:
        signed = await anonymous.post(
            "/api/auth/signup",
            json={"email": email, "name": name, "password": "a long passphrase 1"},
        )
    assert signed.status_code in (200, 201), signed.text
    added = await weft.api.post(
        f"/api/workspaces/{workspace}/members", json={"email": email, "role": role}
    )
    assert added.status_code in (200, 201), added.text
    headers = {"Authorization": f"Bearer {signed.json()['token']}"}
    return httpx.AsyncClient(base_url=weft.server.url, timeout=60, headers=headers)


def _frame_output(state: dict[str, Any], cell_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    (cell,) = [c for c in state["cells"] if c["id"] == cell_id]
    (output,) = [o for o in cell["outputs"] if FRAME in o.get("data", {})]
    return output, output["data"][FRAME]


async def test_completions_and_a_million_row_grid_through_a_real_kernel(weft: Weft) -> None:
    workspace = await weft.workspace()
    notebook_id, (a, c, b) = await weft.notebook(
        MILLION, "", "alpha_below = 2", workspace_id=workspace
    )
    api = weft.api
    cell = f"/api/notebooks/{notebook_id}/cells"
    # No kernel yet: a clear error.
    early = await api.post(f"{cell}/{c}/complete", json={"code": "alph"})
    assert early.status_code == 409
    assert "run a cell first" in early.text
    assert (await weft.run_and_wait(notebook_id, a, timeout=120))["state"] == "done"
    assert (await weft.run_and_wait(notebook_id, b))["state"] == "done"

    # The middle cell sees the first cell's names, never the one below it.
    answer = (await api.post(f"{cell}/{c}/complete", json={"code": "alpha"})).json()
    labels = [i["label"] for i in answer["items"]]
    assert "alpha_above" in labels
    assert "alpha_below" not in labels
    columns = (await api.post(f"{cell}/{c}/complete", json={"code": "df."})).json()
    assert {"i", "v", "name", "sort_values"} <= {i["label"] for i in columns["items"]}
    hint = (await api.post(f"{cell}/{c}/signature", json={"code": "df.head("})).json()
    assert hint["signature"]["params"][0].startswith("n")

    # The output holds the shape and one page, never the frame.
    state = await doc_state(weft, notebook_id)
    output, frame = _frame_output(state, a)
    assert output["data"]["text/plain"].startswith("DataFrame: 1,000,000 rows x 3 columns")
    assert "text/html" not in output["data"]
    assert frame["rows"] == 1_000_000
    assert len(frame["page"]["rows"]) == 50
    assert len(json.dumps(state)) < 60_000

    # Sorted and filtered by the kernel; the view is shared through the document.
    view = {
        "ref": frame["ref"],
        "sort": [{"column": "v", "descending": True}, {"column": "i"}],
        "filter": [{"column": "name", "op": "==", "value": "east"}],
        "page": 3,
        "page_size": 20,
        "share": True,
    }
    page = await api.post(f"{cell}/{a}/frame", json=view)
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["total"] == 250_000
    assert body["offset"] == 60
    assert len(body["rows"]) == 20
    # The same rows as sorting the frame here: v descending, then i ascending.
    east = [((k * 7919) % 1000, k) for k in range(2, 1_000_000, 4)]
    east.sort(key=lambda row: (-row[0], row[1]))
    assert body["rows"] == [[k, v, "east"] for v, k in east[60:80]]
    state = await doc_state(weft, notebook_id)
    output, _ = _frame_output(state, a)
    assert output["view"]["sort"] == view["sort"]
    assert output["view"]["page"] == 3
    assert output["view"]["by_name"]
    assert len(json.dumps(state)) < 60_000  # the page itself is not in the document

    # After a restart the kernel no longer holds the frame, and says so.
    assert (await api.post(f"/api/notebooks/{notebook_id}/restart")).status_code == 200
    with anyio.fail_after(20):
        while (gone := await api.post(f"{cell}/{a}/frame", json=view)).status_code == 200:
            await anyio.sleep(0.2)
    assert gone.status_code in (409, 410)
    assert "run" in gone.json()["error"]["message"]


async def test_who_may_ask_and_hostile_requests(weft: Weft) -> None:
    workspace = await weft.workspace()
    notebook_id, (a, c) = await weft.notebook(MILLION, "print('quick')", workspace_id=workspace)
    cell = f"/api/notebooks/{notebook_id}/cells"
    first = await weft.run_and_wait(notebook_id, a, timeout=120)
    assert first["state"] == "done", (first["error"], first["outputs"])
    _, frame = _frame_output(await doc_state(weft, notebook_id), a)
    viewer = await _person(weft, workspace, "Vera", "viewer")
    async with viewer:
        # A viewer may page a frame everyone sees, never ask for completions.
        assert (
            await viewer.post(f"{cell}/{a}/frame", json={"ref": frame["ref"]})
        ).status_code == 200
        refused = await viewer.post(f"{cell}/{c}/complete", json={"code": "d"})
        assert refused.status_code in (403, 404)

        api = weft.api
        huge = await api.post(f"{cell}/{c}/complete", json={"code": "x" * 200_000})
        assert huge.status_code == 400
        assert "at most 100,000" in huge.text
        too_far = await api.post(f"{cell}/{c}/complete", json={"code": "df", "cursor": 99})
        assert too_far.status_code == 400
        assert "'cursor'" in too_far.text
        unknown = await api.post(f"{cell}/{a}/frame", json={"ref": "0123456789abcdef"})
        assert unknown.status_code == 404
        assert "no output of this cell" in unknown.text
        missing = await api.post(
            f"{cell}/{a}/frame",
            json={"ref": frame["ref"], "filter": [{"column": "nope", "op": "==", "value": 1}]},
        )
        assert missing.status_code == 400
        assert "no column 'nope'" in missing.text
        code = await api.post(
            f"{cell}/{a}/frame",
            json={"ref": frame["ref"], "filter": [{"column": "v", "op": "eval", "value": 1}]},
        )
        assert code.status_code == 400
        rows = await api.post(f"{cell}/{a}/frame", json={"ref": frame["ref"], "page_size": 10**6})
        assert rows.status_code == 400
        assert "page_size" in rows.text

        # A viewer flooding page requests (a new sort each time: real work for the kernel)
        # is held back, and a run committed meanwhile is not delayed by much.
        quiet = time.monotonic()
        assert (await weft.run_and_wait(notebook_id, c))["state"] == "done"
        alone = time.monotonic() - quiet
        statuses: list[int] = []

        async def flood(k: int) -> None:
            spec = {"column": ["v", "i", "name"][k % 3], "descending": bool(k % 2)}
            response = await viewer.post(
                f"{cell}/{a}/frame", json={"ref": frame["ref"], "sort": [spec], "share": True}
            )
            statuses.append(response.status_code)

        async with anyio.create_task_group() as tg:
            for k in range(60):
                tg.start_soon(flood, k)
            await anyio.sleep(0.2)
            started = time.monotonic()
            run = await weft.run_and_wait(notebook_id, c)
            during = time.monotonic() - started
        assert run["state"] == "done"
        assert statuses.count(429) >= 40, statuses  # the rate limit and the waiting cap
        assert statuses.count(200) <= 16, statuses
        print(f"run alone {alone:.2f} s, during a viewer's flood {during:.2f} s")
        assert during < alone + 3  # the one request the runner was answering, on a busy machine
