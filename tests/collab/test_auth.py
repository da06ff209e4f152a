"""Accounts and the access check: sign-up, login, tokens, brute force, and every route."""

from __future__ import annotations

import time
import uuid

import anyio
import httpx
import pytest

from collab.api.accounts import PUBLIC
from collab.server.app import create_app
from collab.settings import Settings
from tests.conftest import PASSWORD, StartServer, new_notebook, sign_up
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio


def client(server: ServerProcess, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=server.url, timeout=30, headers=headers)


async def test_signup_login_logout_and_me(server: ServerProcess):
    async with client(server) as anon:
        response = await anon.post(
            "/api/auth/signup",
            json={"email": "Ada@Example.org", "password": PASSWORD, "name": "Ada"},
        )
        assert response.status_code == 201, response.text
        assert response.json()["user"]["email"] == "ada@example.org"
        assert "weft_session" in response.headers["set-cookie"]
        assert "HttpOnly" in response.headers["set-cookie"]
        again = await anon.post(
            "/api/auth/signup", json={"email": "ada@example.org", "password": PASSWORD, "name": "A"}
        )
        assert again.status_code == 409
        short = await anon.post(
            "/api/auth/signup", json={"email": "b@example.org", "password": "short", "name": "B"}
        )
        assert short.status_code == 400
        assert "password" in short.json()["error"]["message"]
        wrong = await anon.post(
            "/api/auth/login", json={"email": "ada@example.org", "password": "not it at all"}
        )
        assert wrong.status_code == 401
        login = await anon.post(
            "/api/auth/login", json={"email": "ADA@example.org", "password": PASSWORD}
        )
        assert login.status_code == 200
        token = login.json()["token"]
        assert token.startswith("wfs_")
        assert len(token) >= 40
    async with client(server, token) as ada:
        me = await ada.get("/api/auth/me")
        assert me.json()["user"]["name"] == "Ada"
        # The name others see can change; members lists follow.
        renamed = await ada.patch("/api/auth/me", json={"name": "  Ada Lovelace "})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["user"]["name"] == "Ada Lovelace"
        assert (await ada.get("/api/auth/me")).json()["user"]["name"] == "Ada Lovelace"
        workspace = (await ada.post("/api/workspaces", json={"name": "w"})).json()["id"]
        members = (await ada.get(f"/api/workspaces/{workspace}/members")).json()["members"]
        assert [m["name"] for m in members] == ["Ada Lovelace"]
        for bad in ("", "   ", "x" * 201, None, 7):
            refused = await ada.patch("/api/auth/me", json={"name": bad})
            assert refused.status_code == 400, bad
            assert "'name'" in refused.json()["error"]["message"]
        assert (await ada.post("/api/auth/logout")).status_code == 204
        assert (await ada.get("/api/auth/me")).status_code == 401
    # Passwords never reach the log.
    assert PASSWORD not in server.log_text()


async def test_api_tokens_can_be_created_listed_and_revoked(server: ServerProcess, api):
    created = await api.post("/api/auth/tokens", json={"label": "ci"})
    assert created.status_code == 201
    token, token_id = created.json()["token"], created.json()["id"]
    assert token.startswith("wfa_")
    async with client(server, token) as bot:
        assert (await bot.get("/api/workspaces")).status_code == 200
        listed = (await api.get("/api/auth/tokens")).json()["tokens"]
        assert [t["label"] for t in listed] == ["ci"]
        assert "token" not in listed[0]
        assert (await api.delete(f"/api/auth/tokens/{token_id}")).status_code == 204
        assert (await bot.get("/api/workspaces")).status_code == 401


async def test_brute_force_logins_are_slowed_then_locked(start_server: StartServer):
    server = await start_server(WEFT_LOGIN_SLOW_AFTER="2", WEFT_LOGIN_LOCK_AFTER="4")
    await sign_up(server.url, "eve@example.org", "Eve")
    async with client(server) as anon:

        async def attempt(password: str) -> tuple[int, float]:
            started = time.monotonic()
            response = await anon.post(
                "/api/auth/login", json={"email": "eve@example.org", "password": password}
            )
            return response.status_code, time.monotonic() - started

        fast = [await attempt(f"guess number {n}") for n in range(2)]
        slowed = [await attempt(f"guess number {n}") for n in range(2, 4)]
        assert [s for s, _ in fast + slowed] == [401, 401, 401, 401]
        # Past the first threshold each attempt waits longer (0.25 s, then 0.5 s).
        assert slowed[1][1] >= 0.5
        locked, _ = await attempt(PASSWORD)
        assert locked == 429  # even the right password, while locked
        response = await anon.post(
            "/api/auth/login", json={"email": "eve@example.org", "password": PASSWORD}
        )
        assert response.status_code == 429
        assert "try again" in response.json()["error"]["message"]
    assert "guess number" not in server.log_text()


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_a_burst_of_logins_hashes_two_at_a_time(server: ServerProcess):
    """Each argon2id hash takes 64 MiB: twenty logins at once must not take twenty times
    that (anyio would run up to 40 in threads), only wait their turn."""
    assert server.proc is not None
    # The owner's sign-up has already hashed once: the high-water mark includes one hash.
    before = peak_rss_mib(server.proc.pid)
    async with client(server) as anon:
        statuses: list[int] = []

        async def login(n: int) -> None:
            response = await anon.post(
                "/api/auth/login", json={"email": f"nobody{n}@example.org", "password": "x" * 12}
            )
            statuses.append(response.status_code)

        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(login, n)
    assert statuses == [401] * 20
    # Two hashes at once: at most one more 64 MiB block than the sign-up's (plus slack).
    assert peak_rss_mib(server.proc.pid) - before < 64 + 40


async def test_invite_only_server_needs_a_link_or_an_invitation(start_server: StartServer):
    # The fixture's owner is the server's first account, which needs no invitation.
    server = await start_server(WEFT_SIGNUP="invite")
    async with client(server) as anon, client(server, server.token) as owner:
        x = {"email": "x@example.org", "password": PASSWORD, "name": "X"}
        refused = await anon.post("/api/auth/signup", json=x)
        assert refused.status_code == 403
        assert "invite" in refused.json()["error"]["message"]
        workspace = (await owner.post("/api/workspaces", json={"name": "team"})).json()
        link = await owner.post(f"/api/workspaces/{workspace['id']}/links", json={"role": "viewer"})
        with_link = await anon.post("/api/auth/signup", json={**x, "link": link.json()["token"]})
        assert with_link.status_code == 201
        await owner.post(
            f"/api/workspaces/{workspace['id']}/members",
            json={"email": "y@example.org", "role": "viewer"},
        )
        y = {"email": "y@example.org", "password": PASSWORD, "name": "Y"}
        assert (await anon.post("/api/auth/signup", json=y)).status_code == 201


async def test_an_invited_address_becomes_a_member_on_sign_up(start_server: StartServer):
    server = await start_server()
    async with client(server, server.token) as owner:
        workspace = (await owner.post("/api/workspaces", json={"name": "team"})).json()
        invited = await owner.post(
            f"/api/workspaces/{workspace['id']}/members",
            json={"email": "new@example.org", "role": "editor"},
        )
        assert invited.status_code == 201
        assert invited.json()["invited"] == "new@example.org"
        token = await sign_up(server.url, "new@example.org", "Newt")
        members = (await owner.get(f"/api/workspaces/{workspace['id']}/members")).json()
        roles = {m["email"]: m["role"] for m in members["members"]}
        assert roles == {"owner@example.org": "owner", "new@example.org": "editor"}
    async with client(server, token) as newt:
        assert (await newt.get(f"/api/workspaces/{workspace['id']}")).json()["role"] == "editor"


async def test_the_last_owner_cannot_leave_or_be_demoted(server: ServerProcess, api):
    workspace = (await api.post("/api/workspaces", json={"name": "solo"})).json()
    me = (await api.get("/api/auth/me")).json()["user"]["id"]
    demote = await api.patch(
        f"/api/workspaces/{workspace['id']}/members/{me}", json={"role": "viewer"}
    )
    assert demote.status_code == 409
    assert (await api.delete(f"/api/workspaces/{workspace['id']}/members/{me}")).status_code == 409


# -- the route table: no route can forget its check -----------------------------------

# Writes a viewer may make: copying a workspace makes a new one of their own.
VIEWER_MAY = {
    ("POST", "/api/workspaces/{workspace_id}/copy"),
    # A page of a table every viewer already sees in an output (executor.cell_requests:
    # only frames the cell's outputs show, rate-limited per person).
    ("POST", "/api/notebooks/{notebook_id}/cells/{cell_id}/frame"),
}
# Reads that are open to anyone (load balancers, the scraper on this machine).
OPEN = {("GET", "/healthz"), ("GET", "/metrics")}
# Path parameters the test fills with real ids; other ids are made up (403 or 404 then).
REAL = {"workspace_id", "notebook_id", "cell_id", "path"}


def route_table() -> list[tuple[str, str, set[str]]]:
    app = create_app(Settings.from_env({"WEFT_STATE_DIR": "/nonexistent"}))
    table = []
    for route in app.routes:
        methods = getattr(route, "methods", None)
        if not methods:
            continue  # the WebSocket (tested on its own) and the web client's files
        for method in sorted(methods - {"HEAD"}):
            table.append((method, route.path, set(route.param_convertors)))  # type: ignore[attr-defined]
    return table


def fill(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value).replace("{" + name + ":path}", value)
    return path


async def test_every_route_checks_credentials_and_roles(start_server: StartServer):
    server = await start_server()
    table = route_table()
    assert len(table) > 30
    viewer_token = await sign_up(server.url, "viewer@example.org", "Vi")
    stranger_token = await sign_up(server.url, "stranger@example.org", "St")
    async with (
        client(server, server.token) as owner,
        client(server) as anon,
        client(server, viewer_token) as viewer,
        client(server, stranger_token) as stranger,
    ):
        notebook_id = await new_notebook(owner)
        workspace_id = (await owner.get(f"/api/notebooks/{notebook_id}")).json()["workspace_id"]
        added = await owner.post(
            f"/api/workspaces/{workspace_id}/members",
            json={"email": "viewer@example.org", "role": "viewer"},
        )
        assert added.status_code == 201
        ids = {
            "workspace_id": workspace_id,
            "notebook_id": notebook_id,
            "cell_id": "c0",
            "path": "data.csv",
        }
        failures = []
        for method, pattern, params in table:
            url = fill(pattern, ids)
            for name in params - REAL:
                url = url.replace("{" + name + "}", str(uuid.uuid4()))
            key = (method, pattern)
            got = (await anon.request(method, url)).status_code
            if key in OPEN or key in PUBLIC:
                continue
            if got != 401:
                failures.append(f"{method} {pattern}: signed out got {got}, not 401")
            if not params:
                continue  # a signed-in person's own things (their tokens, their workspaces)
            got = (await stranger.request(method, url)).status_code
            if got not in (403, 404):
                failures.append(f"{method} {pattern}: a non-member got {got}")
            if method != "GET" and key not in VIEWER_MAY:
                got = (await viewer.request(method, url)).status_code
                expected = (403,) if params <= REAL else (403, 404)
                if got not in expected:
                    failures.append(f"{method} {pattern}: a viewer got {got}, not {expected}")
        assert not failures, "\n".join(failures)
