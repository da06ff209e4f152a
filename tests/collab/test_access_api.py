"""Who has access to a notebook (GET/DELETE /api/notebooks/{id}/access): every way in is
listed with what it came through, and only those allowed can take one away."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import StartServer, sign_up
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio


def client(server: ServerProcess, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=server.url, timeout=30, headers=headers)


async def test_access_lists_members_grants_and_guests_and_removes_each(
    start_server: StartServer,
) -> None:
    server = await start_server()
    editor_token = await sign_up(server.url, "ed@example.org", "Eddie Editor")
    outsider_token = await sign_up(server.url, "out@example.org", "Oscar Outsider")
    async with (
        client(server, server.token) as owner,
        client(server, editor_token) as editor,
        client(server, outsider_token) as outsider,
        client(server) as anon,
    ):
        workspace = (await owner.post("/api/workspaces", json={"name": "team"})).json()["id"]
        notebook = (
            await owner.post(f"/api/workspaces/{workspace}/notebooks", json={"title": "Plan"})
        ).json()["id"]
        added = await owner.post(
            f"/api/workspaces/{workspace}/members",
            json={"email": "ed@example.org", "role": "editor"},
        )
        assert added.status_code == 201, added.text
        # The editor makes a notebook link; the outsider joins with it, a guest too.
        link = await editor.post(
            f"/api/workspaces/{workspace}/links", json={"role": "viewer", "notebook_id": notebook}
        )
        token = link.json()["token"]
        assert (await outsider.post(f"/api/links/{token}/accept")).status_code == 200
        guest = await anon.post(f"/api/links/{token}/accept", json={"name": "Gus Guest"})
        assert guest.status_code == 200, guest.text
        guest_id = guest.json()["user"]["id"]
        outsider_id = (await outsider.get("/api/auth/me")).json()["user"]["id"]

        listed = await editor.get(f"/api/notebooks/{notebook}/access")
        assert listed.status_code == 200, listed.text
        people = {(p["kind"], p["name"]): p for p in listed.json()["people"]}
        assert set(people) == {
            ("member", "Olive Owner"),
            ("member", "Eddie Editor"),
            ("grant", "Oscar Outsider"),
            ("guest", "Gus Guest"),
        }
        assert people["grant", "Oscar Outsider"]["link_id"] == link.json()["id"]
        assert people["guest", "Gus Guest"]["role"] == "viewer"
        # The editor may take back what their link gave, not remove the owner.
        assert people["grant", "Oscar Outsider"]["removable"]
        assert not people["member", "Olive Owner"]["removable"]
        assert listed.json()["links"] == [
            {"id": link.json()["id"], "notebook_id": notebook, "role": "viewer", "people": 2}
        ]

        # Viewers and strangers cannot list; the grant's holder sees no member's address.
        guest_client = client(server, guest.json()["token"])
        async with guest_client:
            assert (await guest_client.get(f"/api/notebooks/{notebook}/access")).status_code == 403
        assert (await outsider.get(f"/api/notebooks/{notebook}/access")).status_code == 403

        owner_id = people["member", "Olive Owner"]["user_id"]
        refused = await editor.delete(f"/api/notebooks/{notebook}/access/member/{owner_id}")
        assert refused.status_code == 403
        removed = await editor.delete(f"/api/notebooks/{notebook}/access/grant/{outsider_id}")
        assert removed.status_code == 204
        assert (await outsider.get(f"/api/notebooks/{notebook}")).status_code == 404
        ended = await owner.delete(f"/api/notebooks/{notebook}/access/guest/{guest_id}")
        assert ended.status_code == 204
        async with client(server, guest.json()["token"]) as gone:
            assert (await gone.get(f"/api/notebooks/{notebook}")).status_code == 401
        bad = await owner.delete(f"/api/notebooks/{notebook}/access/nobody/{guest_id}")
        assert bad.status_code == 400
        left = {
            (p["kind"], p["name"])
            for p in (await owner.get(f"/api/notebooks/{notebook}/access")).json()["people"]
        }
        assert left == {("member", "Olive Owner"), ("member", "Eddie Editor")}
