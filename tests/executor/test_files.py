"""The file store: REST listing, upload, download, delete, folders, moves; path tricks and
quotas refused with nothing left behind; files that cells write show up."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.conftest import StartServer, sign_up
from tests.executor.conftest import Weft, text_of

pytestmark = pytest.mark.anyio


@pytest.fixture
async def files_api(start_server: StartServer, tmp_path: Path):
    server = await start_server(WEFT_FILES_QUOTA_BYTES="100000", WEFT_FILES_DIR=str(tmp_path / "f"))
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=server.auth) as api:
        workspace = (await api.post("/api/workspaces", json={"name": "w"})).json()["id"]
        yield api, workspace, tmp_path / "f" / workspace


async def test_upload_list_download_move_delete(files_api):
    api, ws, _root = files_api
    assert (
        await api.post(f"/api/workspaces/{ws}/folders", json={"path": "data"})
    ).status_code == 201
    csv = b"month,revenue\njan,10\nfeb,12.5\n"
    put = await api.put(f"/api/workspaces/{ws}/files/data/sales.csv", content=csv)
    assert put.status_code == 201
    assert put.json()["size"] == len(csv)
    listing = (
        await api.get(f"/api/workspaces/{ws}/files", params={"path": "data", "schema": "1"})
    ).json()
    (entry,) = listing["files"]
    assert entry["name"] == "sales.csv"
    assert entry["size"] == len(csv)
    assert [c["name"] for c in entry["schema"]["columns"]] == ["month", "revenue"]
    assert entry["schema"]["columns"][1]["dtype"] == "double"
    assert (await api.get(f"/api/workspaces/{ws}/files/data/sales.csv")).content == csv
    moved = await api.post(
        f"/api/workspaces/{ws}/files-move", json={"from": "data/sales.csv", "to": "s.csv"}
    )
    assert moved.status_code == 200
    assert (await api.get(f"/api/workspaces/{ws}/files/s.csv")).content == csv
    assert (await api.delete(f"/api/workspaces/{ws}/files/s.csv")).status_code == 204
    assert (await api.get(f"/api/workspaces/{ws}/files/s.csv")).status_code == 404


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("%2E%2E/escape.txt", 400),
        ("a/%2E%2E/%2E%2E/escape.txt", 400),
        ("%2Fetc%2Fpasswd", 400),
        ("bad%00name", 400),
        ("x" * 4096, 400),
        ("ctl%01name", 400),
    ],
)
async def test_path_tricks_are_refused(files_api, path: str, status: int):
    api, ws, root = files_api
    for method in ("PUT", "GET", "DELETE"):
        response = await api.request(method, f"/api/workspaces/{ws}/files/{path}", content=b"x")
        assert response.status_code == status, (method, response.text)
        assert response.json()["error"]["message"]
    assert not (root.parent / "escape.txt").exists()


async def test_symlinks_out_of_the_workspace_are_refused(files_api):
    api, ws, root = files_api
    root.mkdir(parents=True, exist_ok=True)
    # What a cell could do inside its container: a link pointing outside.
    os.symlink("/etc", root / "out")
    response = await api.get(f"/api/workspaces/{ws}/files/out/passwd")
    assert response.status_code == 403
    assert "outside" in response.json()["error"]["message"]
    assert (await api.put(f"/api/workspaces/{ws}/files/out/x", content=b"x")).status_code == 403


async def test_over_quota_upload_leaves_nothing(files_api):
    api, ws, root = files_api
    assert (
        await api.put(f"/api/workspaces/{ws}/files/a.bin", content=b"a" * 60_000)
    ).status_code == 201

    async def body():
        for _ in range(10):
            yield b"b" * 10_000

    # No Content-Length (streamed): the limit is enforced while streaming.
    response = await api.put(f"/api/workspaces/{ws}/files/b.bin", content=body())
    assert response.status_code == 413
    assert "quota" in response.json()["error"]["message"]
    assert sorted(p.name for p in root.iterdir()) == ["a.bin"]
    listing = (await api.get(f"/api/workspaces/{ws}/files")).json()
    assert [f["name"] for f in listing["files"]] == ["a.bin"]


async def test_files_cells_write_show_up(weft: Weft):
    ws = await weft.workspace()
    code = "import pandas as pd\npd.DataFrame({'k': [1, 2]}).to_parquet('out.parquet')\nprint('ok')"
    notebook_id, (cell,) = await weft.notebook(code, workspace_id=ws)
    assert text_of(await weft.run_and_wait(notebook_id, cell)) == "ok\n"
    listing = (await weft.api.get(f"/api/workspaces/{ws}/files", params={"schema": "1"})).json()
    (entry,) = listing["files"]
    assert entry["name"] == "out.parquet"
    assert entry["schema"]["rows"] == 2
    assert entry["schema"]["columns"][0]["name"] == "k"


async def test_notebook_editors_reach_the_files_and_notebook_viewers_do_not(files_api):
    """Kernels of every notebook mount the workspace's files: whoever may edit (run) one of
    its notebooks gets them through the API too; someone who may only view one does not."""
    api, ws, _root = files_api
    notebook = (await api.post(f"/api/workspaces/{ws}/notebooks", json={"title": "N"})).json()
    assert (await api.put(f"/api/workspaces/{ws}/files/shared.csv", content=b"a\n1\n")).is_success

    async def accept(role: str, token: str | None = None) -> str:
        link = await api.post(
            f"/api/workspaces/{ws}/links", json={"role": role, "notebook_id": notebook["id"]}
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(base_url=api.base_url, headers=headers) as anyone:
            accepted = await anyone.post(f"/api/links/{link.json()['token']}/accept")
        assert accepted.status_code == 200, accepted.text
        return str(accepted.json()["token"]) if token is None else token

    editor_guest = await accept("editor")
    viewer_guest = await accept("viewer")
    member = await sign_up(str(api.base_url), "mia@example.org", "Mia")
    await accept("editor", member)  # a member's notebook grant
    for n, token in enumerate((editor_guest, member)):
        async with httpx.AsyncClient(base_url=api.base_url, headers=bearer(token)) as who:
            listing = (await who.get(f"/api/workspaces/{ws}/files")).json()
            assert "shared.csv" in [f["name"] for f in listing["files"]]
            assert (await who.get(f"/api/workspaces/{ws}/files/shared.csv")).content == b"a\n1\n"
            put = await who.put(f"/api/workspaces/{ws}/files/upload{n}.txt", content=b"x")
            assert put.status_code == 201
            # Files, not the workspace: its notebook list stays out of reach.
            assert (await who.get(f"/api/workspaces/{ws}/notebooks")).status_code == 404
    async with httpx.AsyncClient(base_url=api.base_url, headers=bearer(viewer_guest)) as viewer:
        assert (await viewer.get(f"/api/notebooks/{notebook['id']}")).status_code == 200
        assert (await viewer.get(f"/api/workspaces/{ws}/files")).status_code == 404
        assert (await viewer.get(f"/api/workspaces/{ws}/files/shared.csv")).status_code == 404


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
