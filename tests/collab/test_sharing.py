"""Share links, viewers over the live protocol, revocation of live sockets, copies, origins."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import asyncpg
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import StartServer, sign_up
from tests.support.nodeclient import node_client
from tests.support.pyclient import py_client
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio


def client(server: ServerProcess, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=server.url, timeout=30, headers=headers)


async def notebook_in_new_workspace(api: httpx.AsyncClient) -> tuple[str, str]:
    workspace = (await api.post("/api/workspaces", json={"name": "team"})).json()
    notebook = await api.post(f"/api/workspaces/{workspace['id']}/notebooks", json={"title": "N"})
    return workspace["id"], notebook.json()["id"]


async def test_share_link_for_a_guest_and_for_a_member(
    server: ServerProcess, api: httpx.AsyncClient, database_url: str
):
    workspace_id, notebook_id = await notebook_in_new_workspace(api)
    _, elsewhere = await notebook_in_new_workspace(api)
    made = await api.post(
        f"/api/workspaces/{workspace_id}/links", json={"role": "editor", "notebook_id": notebook_id}
    )
    assert made.status_code == 201, made.text
    link = made.json()
    assert link["url"].endswith(f"/links/{link['token']}")
    assert len(link["token"]) >= 4 + 43  # prefix + 256 bits in base64url
    # Stored only as a hash: the token is nowhere in the database.
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT * FROM share_links")
        assert link["token"] not in json.dumps([dict(r) for r in rows], default=repr)
    finally:
        await conn.close()
    async with client(server) as anon:
        preview = (await anon.get(f"/api/links/{link['token']}")).json()
        assert preview["role"] == "editor"
        assert preview["notebook_id"] == notebook_id
        guest = await anon.post(f"/api/links/{link['token']}/accept", json={"name": "Gus"})
        assert guest.status_code == 200
        assert guest.json()["guest"] is True
        guest_token = guest.json()["token"]
    async with client(server, guest_token) as gus:
        assert (await gus.get(f"/api/notebooks/{notebook_id}")).json()["role"] == "editor"
        # Confined to the link's notebook: nothing else of the workspace, nothing elsewhere.
        assert (await gus.get(f"/api/notebooks/{elsewhere}")).status_code == 404
        assert (await gus.get(f"/api/workspaces/{workspace_id}/notebooks")).status_code == 404
        assert (await gus.post("/api/workspaces", json={"name": "mine"})).status_code == 403
    async with node_client(server.ws_base, notebook_id, token=guest_token) as gus_doc:
        await gus_doc.call("insert", text="from the guest")
        async with py_client(server.ws_base, notebook_id, token=server.token) as owner_doc:
            await owner_doc.wait_text("from the guest")
    # Signed in, the same kind of link makes a member (workspace link) with that role.
    workspace_link = (
        await api.post(f"/api/workspaces/{workspace_id}/links", json={"role": "viewer"})
    ).json()
    member_token = await sign_up(server.url, "mia@example.org", "Mia")
    async with client(server, member_token) as mia:
        accepted = await mia.post(f"/api/links/{workspace_link['token']}/accept")
        assert accepted.json()["guest"] is False
        assert accepted.json()["token"] == member_token
        assert (await mia.get(f"/api/workspaces/{workspace_id}")).json()["role"] == "viewer"
    members = (await api.get(f"/api/workspaces/{workspace_id}/members")).json()["members"]
    assert {m["email"]: m["role"] for m in members}["mia@example.org"] == "viewer"


async def test_links_expire_run_out_and_never_exceed_their_creator(
    server: ServerProcess, api: httpx.AsyncClient
):
    workspace_id, _ = await notebook_in_new_workspace(api)
    once = (
        await api.post(
            f"/api/workspaces/{workspace_id}/links", json={"role": "viewer", "max_uses": 1}
        )
    ).json()
    brief = (
        await api.post(
            f"/api/workspaces/{workspace_id}/links", json={"role": "viewer", "expires_in": 1}
        )
    ).json()
    too_high = await api.post(f"/api/workspaces/{workspace_id}/links", json={"role": "owner"})
    assert too_high.status_code == 400
    async with client(server) as anon:
        assert (await anon.post(f"/api/links/{once['token']}/accept")).status_code == 200
        used_up = await anon.post(f"/api/links/{once['token']}/accept")
        assert used_up.status_code == 410
        assert "used up" in used_up.json()["error"]["message"]
        await anyio.sleep(1.2)
        expired = await anon.post(f"/api/links/{brief['token']}/accept")
        assert expired.status_code == 410
        assert "expired" in expired.json()["error"]["message"]
        assert (await anon.post("/api/links/wfl_nonsense/accept")).status_code == 404
    # A viewer cannot share at all; an editor cannot share more than editor.
    viewer_token = await sign_up(server.url, "vic@example.org", "Vic")
    await api.post(
        f"/api/workspaces/{workspace_id}/members",
        json={"email": "vic@example.org", "role": "viewer"},
    )
    async with client(server, viewer_token) as vic:
        refused = await vic.post(f"/api/workspaces/{workspace_id}/links", json={"role": "viewer"})
        assert refused.status_code == 403


async def test_revoking_a_link_closes_its_live_sockets_within_a_second(
    server: ServerProcess, api: httpx.AsyncClient
):
    workspace_id, notebook_id = await notebook_in_new_workspace(api)
    link = (await api.post(f"/api/workspaces/{workspace_id}/links", json={"role": "editor"})).json()
    async with client(server) as anon:
        guest_token = (await anon.post(f"/api/links/{link['token']}/accept")).json()["token"]
    async with (
        node_client(server.ws_base, notebook_id, token=guest_token) as guest,
        node_client(server.ws_base, notebook_id, token=server.token) as owner,
    ):
        started = time.monotonic()
        assert (await api.delete(f"/api/links/{link['id']}")).status_code == 204
        closed = await guest.event(lambda e: e.get("event") == "close", timeout=5)
        assert time.monotonic() - started < 1.0
        assert closed["code"] == 4401
        # The owner's socket is untouched and still works.
        await owner.call("insert", text="still here")
        await owner.call("wait", contains="still here", timeout_ms=2000)
        assert not any(e.get("event") == "close" for e in owner.events)
    async with client(server, guest_token) as gone:
        assert (await gone.get(f"/api/notebooks/{notebook_id}")).status_code == 401


async def test_a_viewer_edit_is_refused_never_stored_or_seen(
    server: ServerProcess, api: httpx.AsyncClient
):
    workspace_id, notebook_id = await notebook_in_new_workspace(api)
    viewer_token = await sign_up(server.url, "val@example.org", "Val")
    await api.post(
        f"/api/workspaces/{workspace_id}/members",
        json={"email": "val@example.org", "role": "viewer"},
    )
    async with (
        node_client(server.ws_base, notebook_id, token=server.token) as editor,
        node_client(server.ws_base, notebook_id, token=viewer_token) as viewer,
    ):
        await editor.call("insert", text="editor text ")
        await viewer.wait_text("editor text")  # viewers receive the live document
        await viewer.call("insert", text="VIEWER WAS HERE")
        await editor.call("insert", text="after ")
        await viewer.wait_text("after")
        await anyio.sleep(0.5)
        assert "VIEWER" not in await editor.text()
        # The viewer was told, under the server's reserved awareness id 0.
        peers = (await viewer.call("peers"))["peers"]
        notice = [p["state"]["weft"] for p in peers if p["clientId"] == 0]
        assert notice
        assert notice[0]["readonly"] is True
        assert notice[0]["refused_updates"] is True
        # The socket stays open: a viewer keeps watching.
        assert not any(e.get("event") == "close" for e in viewer.events)
    async with py_client(server.ws_base, notebook_id, token=server.token) as fresh:
        assert "after" in fresh.text()
        assert "VIEWER" not in fresh.text()
    metrics = (await api.get("/metrics")).text
    assert "weft_refused_updates_total 1.0" in metrics
    assert "update refused: read-only connection" in server.log_text()


async def test_copy_of_a_workspace_reproduces_notebooks_and_files(
    start_server: StartServer, tmp_path: Path
):
    server = await start_server(WEFT_FILES_DIR=str(tmp_path / "files"))
    api = client(server, server.token)
    workspace_id, notebook_id = await notebook_in_new_workspace(api)
    async with node_client(server.ws_base, notebook_id, token=server.token) as alice:
        await alice.call("insert", text="import pandas as pd\nprint('hello')")
        await alice.call("wait", contains="hello", timeout_ms=2000)
        async with py_client(server.ws_base, notebook_id, token=server.token) as check:
            await check.wait_text("hello")
    second = await api.post(f"/api/workspaces/{workspace_id}/notebooks", json={"title": "Second"})
    assert second.status_code == 201
    folder = await api.post(f"/api/workspaces/{workspace_id}/folders", json={"path": "data"})
    assert folder.status_code == 201
    put = await api.put(
        f"/api/workspaces/{workspace_id}/files/data/sales.csv", content=b"a,b\n1,2\n"
    )
    assert put.status_code == 201, put.text
    copied = await api.post(f"/api/workspaces/{workspace_id}/copy", json={"name": "Copy"})
    assert copied.status_code == 201, copied.text
    copy_id = copied.json()["id"]
    originals = (await api.get(f"/api/workspaces/{workspace_id}/notebooks")).json()["notebooks"]
    copies = (await api.get(f"/api/workspaces/{copy_id}/notebooks")).json()["notebooks"]
    assert sorted(n["title"] for n in copies) == sorted(n["title"] for n in originals)
    by_title = {n["title"]: n["id"] for n in copies}
    for original in originals:
        before = (await api.get(f"/api/notebooks/{original['id']}/export")).json()
        after = (await api.get(f"/api/notebooks/{by_title[original['title']]}/export")).json()
        assert after["cells"] == before["cells"]
        assert after["metadata"] == before["metadata"]
    copied_file = await api.get(f"/api/workspaces/{copy_id}/files/data/sales.csv")
    assert copied_file.content == b"a,b\n1,2\n"
    # And one notebook into the same workspace.
    one = await api.post(f"/api/notebooks/{notebook_id}/copy", json={})
    assert one.status_code == 201
    assert one.json()["title"] == "Copy of N"
    await api.aclose()


async def test_sockets_and_cookie_writes_from_other_origins_are_refused(
    server: ServerProcess, api: httpx.AsyncClient
):
    _, notebook_id = await notebook_in_new_workspace(api)

    url = f"{server.ws_base}/{notebook_id}?token={server.token}"
    async with connect(url, origin="http://evil.example") as ws:  # type: ignore[arg-type]
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4403
    async with httpx.AsyncClient(
        base_url=server.url, cookies={"weft_session": server.token or ""}
    ) as browser:
        # Same-origin writes with the cookie are fine; a foreign page's are not.
        own = await browser.post(
            "/api/workspaces", json={"name": "x"}, headers={"Origin": server.url}
        )
        assert own.status_code == 201
        foreign = await browser.post(
            "/api/workspaces", json={"name": "x"}, headers={"Origin": "http://evil.example"}
        )
        assert foreign.status_code == 403
    async with connect(f"{server.ws_base}/{notebook_id}") as ws:
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4401
