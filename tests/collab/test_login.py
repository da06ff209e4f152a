"""Logging in and signing up against an attacker: counting before checking, strangers who
cannot lock the owner out, other sites' pages, TLS proxies, common passwords."""

from __future__ import annotations

from collections import Counter

import anyio
import asyncpg
import httpx
import pytest

from collab.settings import Settings, SettingsError
from tests.conftest import PASSWORD, StartServer, sign_up
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio


def from_address(
    server: ServerProcess, address: str, cookies: httpx.Cookies | None = None
) -> httpx.AsyncClient:
    """A client connecting from another loopback address (127.0.0.0/8 is all this host's)."""
    return httpx.AsyncClient(
        base_url=server.url,
        timeout=60,
        transport=httpx.AsyncHTTPTransport(local_address=address),
        cookies=cookies,
    )


async def login(client: httpx.AsyncClient, email: str, password: str, **kw: object) -> int:
    response = await client.post(
        "/api/auth/login",
        json={"email": email, "password": password},
        **kw,  # type: ignore[arg-type]
    )
    return response.status_code


async def test_parallel_guesses_are_counted_before_any_is_checked(start_server: StartServer):
    """Thirty wrong passwords at once: only the lock threshold's worth are checked (401),
    the rest are refused unchecked (429). Counting after checking let all thirty through."""
    server = await start_server(WEFT_LOGIN_SLOW_AFTER="5", WEFT_LOGIN_LOCK_AFTER="5")
    await sign_up(server.url, "eve@example.org", "Eve")
    statuses: list[int] = []
    async with from_address(server, "127.0.0.1") as anon:

        async def guess(n: int) -> None:
            statuses.append(await login(anon, "eve@example.org", f"guess number {n}"))

        async with anyio.create_task_group() as tg:
            for n in range(30):
                tg.start_soon(guess, n)
    assert Counter(statuses) == {401: 5, 429: 25}
    assert "guess number" not in server.log_text()


async def test_a_stranger_cannot_lock_the_owner_out(start_server: StartServer):
    server = await start_server(WEFT_LOGIN_SLOW_AFTER="3", WEFT_LOGIN_LOCK_AFTER="3")
    # Ada signs up from 127.0.0.1 and once signs in from a laptop at 127.0.0.4.
    await sign_up(server.url, "ada@example.org", "Ada")
    async with from_address(server, "127.0.0.4") as laptop:
        assert await login(laptop, "ada@example.org", PASSWORD) == 200
        laptop_cookies = laptop.cookies
    # A stranger guesses from 127.0.0.2 until the account is locked for strangers; claiming
    # to be a proxy for Ada's address changes nothing (127.0.0.2 is no trusted proxy).
    async with from_address(server, "127.0.0.2") as stranger:
        guesses = [await login(stranger, "ada@example.org", f"guess {n}") for n in range(3)]
        assert guesses == [401, 401, 401]
        assert await login(stranger, "ada@example.org", "guess 4") == 429
        spoofed = {"X-Forwarded-For": "127.0.0.1"}
        assert await login(stranger, "ada@example.org", PASSWORD, headers=spoofed) == 429
    # Anyone else unknown is locked out too, even with the right password...
    async with from_address(server, "127.0.0.5") as elsewhere:
        assert await login(elsewhere, "ada@example.org", PASSWORD) == 429
    # ...but not Ada from where she signed up, nor her laptop's browser from a new address.
    async with from_address(server, "127.0.0.1") as home:
        assert await login(home, "ada@example.org", PASSWORD) == 200
    assert "weft_device" in laptop_cookies  # the browser's mark (no credential)
    async with from_address(server, "127.0.0.5", cookies=laptop_cookies) as travelling:
        assert await login(travelling, "ada@example.org", PASSWORD) == 200
    # Her own known address still has a limit of its own.
    async with from_address(server, "127.0.0.1") as home:
        assert [await login(home, "ada@example.org", f"typo {n}") for n in range(4)] == [
            401,
            401,
            401,
            429,
        ]


async def test_sign_in_calls_refuse_other_sites(start_server: StartServer):
    """Login, sign-up and accepting a link need no credential, so only the Origin and the
    JSON body stop another site's page from signing a visitor in as someone else."""
    server = await start_server()
    evil = {"Origin": "https://evil.example"}
    ada = {"email": "ada@example.org", "password": PASSWORD, "name": "Ada"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as anon:
        # Sign-up: from another origin, or as a form (which any page can post), refused.
        response = await anon.post("/api/auth/signup", json=ada, headers=evil)
        assert response.status_code == 403
        assert "origin" in response.json()["error"]["message"]
        response = await anon.post("/api/auth/signup", data=ada)
        assert response.status_code == 415
        assert response.json()["error"]["code"] == "unsupported_media_type"
        plain = {"Content-Type": "text/plain"}
        response = await anon.post("/api/auth/signup", content=b'{"email": "x"}', headers=plain)
        assert response.status_code == 415
        own = {"Origin": server.url}
        assert (await anon.post("/api/auth/signup", json=ada, headers=own)).status_code == 201
        # Login: the same.
        credentials = {"email": "ada@example.org", "password": PASSWORD}
        response = await anon.post("/api/auth/login", json=credentials, headers=evil)
        assert response.status_code == 403
        assert (await anon.post("/api/auth/login", data=credentials)).status_code == 415
        assert (
            await anon.post("/api/auth/login", json=credentials, headers=own)
        ).status_code == 200
        # Accepting a link (which makes a guest session): the same; an empty body may still
        # come without a type.
        headers = {"Authorization": f"Bearer {server.token}"}
        workspace = (await anon.post("/api/workspaces", json={"name": "w"}, headers=headers)).json()
        link = (
            await anon.post(
                f"/api/workspaces/{workspace['id']}/links", json={"role": "viewer"}, headers=headers
            )
        ).json()
        accept = f"/api/links/{link['token']}/accept"
        anon.cookies.clear()
        assert (await anon.post(accept, json={"name": "Gus"}, headers=evil)).status_code == 403
        assert (await anon.post(accept, data={"name": "Gus"})).status_code == 415
        assert (await anon.post(accept, json={"name": "Gus"}, headers=own)).status_code == 200
        anon.cookies.clear()
        assert (await anon.post(accept)).status_code == 200


async def test_cookies_are_secure_behind_a_tls_proxy(start_server: StartServer):
    """A proxy terminating TLS talks plain HTTP to Weft: WEFT_PUBLIC_URL tells it that
    browsers use https, so the cookies get Secure (and share links the public address)."""
    public = await start_server(WEFT_PUBLIC_URL="https://weft.example.org/")
    browser_origin = {"Origin": "https://weft.example.org"}
    async with httpx.AsyncClient(base_url=public.url, timeout=30) as anon:
        response = await anon.post(
            "/api/auth/signup",
            json={"email": "ada@example.org", "password": PASSWORD, "name": "Ada"},
            headers=browser_origin,
        )
        assert response.status_code == 201, response.text
        cookies = {c.split("=")[0]: c.lower() for c in response.headers.get_list("set-cookie")}
        assert "; secure" in cookies["weft_session"]
        assert "; secure" in cookies["weft_device"]
        headers = {"Authorization": f"Bearer {response.json()['token']}"}
        workspace = (await anon.post("/api/workspaces", json={"name": "w"}, headers=headers)).json()
        link = await anon.post(
            f"/api/workspaces/{workspace['id']}/links", json={"role": "viewer"}, headers=headers
        )
        assert link.json()["url"].startswith("https://weft.example.org/links/wfl_")
    # Without it, a trusted proxy's X-Forwarded-Proto says so per request: by default only
    # loopback peers are trusted; with WEFT_TRUSTED_PROXIES=none nobody is.
    for env, trusted in (({}, True), ({"WEFT_TRUSTED_PROXIES": "none"}, False)):
        server = await start_server(**env)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as anon:
            for proto, secure in (("https", trusted), ("http", False)):
                response = await anon.post(
                    "/api/auth/login",
                    json={"email": "ada@example.org", "password": PASSWORD},
                    headers={"X-Forwarded-Proto": proto},
                )
                assert response.status_code == 200
                assert ("; secure" in response.headers["set-cookie"].lower()) is secure, env


async def test_common_passwords_are_refused(server: ServerProcess):
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as anon:
        for common in ("password123", "Password1", "qwertyuiop", "iloveyou", "Trustno1"):
            response = await anon.post(
                "/api/auth/signup",
                json={"email": "ada@example.org", "password": common, "name": "Ada"},
            )
            assert response.status_code == 400, common
            message = response.json()["error"]["message"]
            assert "10,000 most common" in message
            assert "choose another" in message
        response = await anon.post(
            "/api/auth/signup",
            json={"email": "ada@example.org", "password": "velvet kiln umbrella", "name": "Ada"},
        )
        assert response.status_code == 201


async def test_the_database_keeps_only_digests_and_hashes(server: ServerProcess, database_url: str):
    """A leaked database signs nobody in: tokens, tickets, links and device marks are kept
    as SHA-256 digests, passwords as argon2id."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as anon:
        signup = await anon.post(
            "/api/auth/signup",
            json={"email": "ada@example.org", "password": PASSWORD, "name": "Ada"},
        )
        session = signup.json()["token"]
        device = anon.cookies["weft_device"]
        auth = {"Authorization": f"Bearer {session}"}
        api_token = (await anon.post("/api/auth/tokens", json={}, headers=auth)).json()["token"]
        workspace = (await anon.post("/api/workspaces", json={"name": "w"}, headers=auth)).json()
        notebook = await anon.post(
            f"/api/workspaces/{workspace['id']}/notebooks", json={}, headers=auth
        )
        link = await anon.post(
            f"/api/workspaces/{workspace['id']}/links", json={"role": "viewer"}, headers=auth
        )
        ticket = await anon.post(
            "/api/auth/socket-ticket", json={"notebook_id": notebook.json()["id"]}, headers=auth
        )
    secrets = [session, device, api_token, link.json()["token"], ticket.json()["ticket"]]
    conn = await asyncpg.connect(database_url)
    try:
        tables = ["users", "credentials", "share_links", "socket_tickets", "login_known"]
        dump = " ".join(
            [
                str(row[0])
                for table in tables
                for row in await conn.fetch(f"SELECT row_to_json(t)::text FROM {table} t")
            ]
        )
        hashed = await conn.fetchval(
            "SELECT password_hash FROM users WHERE email = $1", "ada@example.org"
        )
    finally:
        await conn.close()
    assert all(secret not in dump for secret in secrets)
    assert PASSWORD not in dump
    assert hashed.startswith("$argon2id$")


def test_proxy_and_public_url_settings_are_checked() -> None:
    assert Settings.from_env({}).trusted_proxies == ("127.0.0.1", "::1")
    assert Settings.from_env({"FORWARDED_ALLOW_IPS": "10.0.0.2"}).trusted_proxies == ("10.0.0.2",)
    trusted = Settings.from_env({"WEFT_TRUSTED_PROXIES": "10.0.0.0/8, fd00::1"})
    assert trusted.trusted_proxies == ("10.0.0.0/8", "fd00::1")
    assert Settings.from_env({"WEFT_TRUSTED_PROXIES": "none"}).trusted_proxies == ()
    public = Settings.from_env({"WEFT_PUBLIC_URL": "https://weft.example.org/"})
    assert public.public_url == "https://weft.example.org"
    assert public.public_origin == "https://weft.example.org"
    for env in (
        {"WEFT_TRUSTED_PROXIES": "the balancer"},
        {"WEFT_PUBLIC_URL": "weft.example.org"},
        {"WEFT_PUBLIC_URL": "ftp://weft.example.org"},
    ):
        with pytest.raises(SettingsError):
            Settings.from_env(env)
