"""REST: workspaces and notebooks, .ipynb import and export, clear errors."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from pycrdt import Array, Doc

from collab.document.notebook import empty_notebook, seed_update, to_ipynb
from tests.support.nodeclient import node_client
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio

SALES = Path(__file__).parent / "data" / "sales.ipynb"


async def test_workspace_and_notebook_lifecycle(api: httpx.AsyncClient):
    created = await api.post("/api/workspaces", json={"name": "Team"})
    assert created.status_code == 201
    ws = created.json()
    assert (await api.get(f"/api/workspaces/{ws['id']}")).json()["name"] == "Team"
    renamed = await api.patch(f"/api/workspaces/{ws['id']}", json={"name": "Team 2"})
    assert renamed.json()["name"] == "Team 2"

    nb = (await api.post(f"/api/workspaces/{ws['id']}/notebooks", json={"title": "One"})).json()
    assert nb["workspace_id"] == ws["id"]
    assert nb["title"] == "One"
    listed = (await api.get(f"/api/workspaces/{ws['id']}/notebooks")).json()["notebooks"]
    assert [n["id"] for n in listed] == [nb["id"]]
    assert (await api.get("/api/workspaces")).json()["workspaces"][0]["notebook_count"] == 1

    assert (await api.patch(f"/api/notebooks/{nb['id']}", json={"title": "Uno"})).status_code == 200
    assert (await api.get(f"/api/notebooks/{nb['id']}")).json()["title"] == "Uno"
    exported = (await api.get(f"/api/notebooks/{nb['id']}/export")).json()
    assert exported["metadata"]["title"] == "Uno"

    assert (await api.delete(f"/api/notebooks/{nb['id']}")).status_code == 204
    assert (await api.get(f"/api/notebooks/{nb['id']}")).status_code == 404
    assert (await api.delete(f"/api/workspaces/{ws['id']}")).status_code == 204
    assert (await api.get(f"/api/workspaces/{ws['id']}")).status_code == 404


async def test_rename_reaches_open_clients(server: ServerProcess, api: httpx.AsyncClient):
    ws = (await api.post("/api/workspaces", json={"name": "w"})).json()
    nb = (await api.post(f"/api/workspaces/{ws['id']}/notebooks", json={"title": "Old"})).json()
    async with node_client(server.ws_base, nb["id"], token=server.token) as client:
        assert (await client.call("get"))["meta"]["metadata"]["title"] == "Old"
        await api.patch(f"/api/notebooks/{nb['id']}", json={"title": "New"})
        for _ in range(200):
            if (await client.call("get"))["meta"]["metadata"]["title"] == "New":
                break
        else:
            pytest.fail("the rename never reached the open client")


async def test_deleting_a_notebook_closes_its_clients(
    server: ServerProcess, api: httpx.AsyncClient
):
    ws = (await api.post("/api/workspaces", json={"name": "w"})).json()
    nb = (await api.post(f"/api/workspaces/{ws['id']}/notebooks", json={"title": "T"})).json()
    async with node_client(server.ws_base, nb["id"], token=server.token) as client:
        await api.delete(f"/api/notebooks/{nb['id']}")
        event = await client.event(lambda e: e.get("event") == "close")
        assert event["code"] == 4410
        assert event["reason"] == "notebook deleted"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/api/workspaces", {"name": ""}, 400, "bad_request"),
        ("POST", "/api/workspaces", {"name": "x" * 201}, 400, "bad_request"),
        ("POST", "/api/workspaces", {}, 400, "bad_request"),
        ("POST", "/api/workspaces", [1, 2], 400, "bad_request"),
        ("POST", "/api/workspaces", b"{not json", 400, "bad_request"),
        ("GET", "/api/workspaces/not-a-uuid", None, 404, "not_found"),
        ("GET", f"/api/workspaces/{uuid.UUID(int=1)}", None, 404, "not_found"),
        ("POST", f"/api/workspaces/{uuid.UUID(int=1)}/notebooks", {"title": "t"}, 404, "not_found"),
        ("GET", f"/api/notebooks/{uuid.UUID(int=1)}", None, 404, "not_found"),
        ("GET", f"/api/notebooks/{uuid.UUID(int=1)}/export", None, 404, "not_found"),
        ("DELETE", f"/api/notebooks/{uuid.UUID(int=1)}", None, 404, "not_found"),
        ("PUT", "/api/workspaces", {}, 405, "method_not_allowed"),
        ("GET", "/api/nothing-here", None, 404, "not_found"),
    ],
)
async def test_bad_requests_get_clear_json_errors(
    api: httpx.AsyncClient, method: str, path: str, body: object, status: int, code: str
):
    content = body if isinstance(body, bytes) else None
    payload = None if isinstance(body, bytes) or body is None else body
    response = await api.request(method, path, json=payload, content=content)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]


async def test_import_rejects_what_is_not_a_notebook(api: httpx.AsyncClient):
    ws = (await api.post("/api/workspaces", json={"name": "w"})).json()
    url = f"/api/workspaces/{ws['id']}/notebooks/import"
    for body in (b"not json", b'{"cells": 3}', b"\xff\xfe", json.dumps({"nbformat": 4}).encode()):
        response = await api.post(url, content=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["message"]


async def test_ipynb_round_trip(server: ServerProcess, api: httpx.AsyncClient):
    original = nbformat.read(SALES, as_version=4)
    ws = (await api.post("/api/workspaces", json={"name": "w"})).json()
    imported = await api.post(
        f"/api/workspaces/{ws['id']}/notebooks/import", content=SALES.read_bytes()
    )
    assert imported.status_code == 201, imported.text
    notebook_id = imported.json()["id"]
    assert imported.json()["title"] == "Sales analysis"

    # Live clients see the imported cells.
    async with node_client(server.ws_base, notebook_id, token=server.token) as client:
        cells = (await client.call("get"))["cells"]
        assert [c["id"] for c in cells] == [c["id"] for c in original.cells]
        assert cells[2]["outputs"][0]["text"] == "jan\nfeb\n"

    response = await api.get(f"/api/notebooks/{notebook_id}/export")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ipynb+json")
    exported = nbformat.reads(response.text, as_version=4)
    nbformat.validate(exported)
    expected = copy.deepcopy(original)
    for cell in expected.cells:
        if cell.cell_type == "code":
            cell.metadata.setdefault("language", "python")
    assert exported.metadata == expected.metadata
    assert len(exported.cells) == len(expected.cells)
    for got, want in zip(exported.cells, expected.cells, strict=True):
        assert got == want, (got, want)


def test_seeding_twice_cannot_duplicate_cells():
    notebook_id = uuid.uuid4()
    notebook = json.loads(SALES.read_text())
    doc: Doc[Any] = Doc()
    doc.apply_update(seed_update(notebook, notebook_id))
    doc.apply_update(seed_update(notebook, notebook_id))
    assert len(doc.get("cells", type=Array)) == len(notebook["cells"])
    assert to_ipynb(doc)["cells"][1]["source"] == "".join(notebook["cells"][1]["source"])
    # The same content under another notebook id gets other cell ids where it had none.
    blank = empty_notebook("t")
    first: Doc[Any] = Doc()
    second: Doc[Any] = Doc()
    first.apply_update(seed_update(blank, uuid.uuid4()))
    second.apply_update(seed_update(blank, notebook_id))
    assert to_ipynb(first)["cells"][0]["id"] != to_ipynb(second)["cells"][0]["id"]
