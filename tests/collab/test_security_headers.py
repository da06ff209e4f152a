"""Every HTTP response carries the security headers (collab/server/security_headers.py): the
client's pages and assets, the output frame's page (its own, sandboxing policy), API JSON,
errors (401, 404, 405) and even a crash's 500."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collab.server.security_headers import APP_POLICY, FRAME_POLICY, SecurityHeaders
from tests.conftest import StartServer

pytestmark = pytest.mark.anyio


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def assert_secured(response: httpx.Response, policy: str = APP_POLICY) -> None:
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    assert response.headers.get("content-security-policy") == policy, where
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert response.headers.get("referrer-policy") == "same-origin", where


def test_the_policies_say_what_the_docs_say() -> None:
    app = directives(APP_POLICY)
    assert app["script-src"] == ["'self'"]  # no inline script, no eval
    assert app["connect-src"] == ["'self'"]
    assert app["img-src"] == ["'self'", "data:", "blob:"]
    assert app["frame-src"] == ["'self'"]
    assert app["frame-ancestors"] == ["'none'"]
    assert app["object-src"] == ["'none'"]
    frame = directives(FRAME_POLICY)
    assert frame["default-src"] == ["'none'"]
    assert "connect-src" not in frame  # so default-src 'none': no fetch, no WebSocket
    assert frame["img-src"] == ["data:", "blob:"]
    assert frame["frame-ancestors"] == ["'self'"]
    assert "allow-same-origin" not in frame["sandbox"]
    assert "allow-popups-to-escape-sandbox" not in frame["sandbox"]


def web_dir(root: Path) -> Path:
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>Weft</title>")
    (root / "frame.html").write_text("<!doctype html><title>Output</title>")
    (root / "assets" / "index-abc123.js").write_text("export {}\n")
    return root


async def test_every_response_carries_the_headers(start_server: StartServer, tmp_path: Path):
    server = await start_server(WEFT_WEB_DIR=str(web_dir(tmp_path / "web")))
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=30) as anon,
        httpx.AsyncClient(base_url=server.url, timeout=30, headers=server.auth) as owner,
    ):
        page = await anon.get("/")
        assert page.status_code == 200
        assert "<title>Weft" in page.text
        assert_secured(page)
        assert page.headers["x-frame-options"] == "DENY"
        assert_secured(await anon.head("/"))
        deep = await anon.get("/notebooks/00000000-0000-0000-0000-000000000000")
        assert deep.status_code == 200
        assert "<title>Weft" in deep.text
        assert_secured(deep)

        asset = await anon.get("/assets/index-abc123.js")
        assert asset.status_code == 200
        assert_secured(asset)
        # The output frame's origin is opaque: its module scripts are CORS loads.
        assert asset.headers["access-control-allow-origin"] == "*"
        missing_asset = await anon.get("/assets/missing.js")
        assert missing_asset.status_code == 404
        assert_secured(missing_asset)

        frame = await anon.get("/frame.html")
        assert frame.status_code == 200
        assert "<title>Output" in frame.text
        assert_secured(frame, FRAME_POLICY)
        assert frame.headers["x-frame-options"] == "SAMEORIGIN"
        assert "access-control-allow-origin" not in frame.headers

        workspace = await owner.post("/api/workspaces", json={"name": "Headers"})
        assert workspace.status_code == 201
        assert_secured(workspace)
        listed = await owner.get("/api/workspaces")
        assert listed.status_code == 200
        assert listed.headers["content-type"] == "application/json"
        assert_secured(listed)
        assert "access-control-allow-origin" not in listed.headers

        for response in (
            await anon.get("/api/auth/me"),  # 401
            await owner.get("/api/nothing-here"),  # 404 under /api: never index.html
            await owner.delete("/api/auth/me"),  # 405
            await anon.post("/api/auth/login", json={"email": "x@example.org", "password": "no"}),
            await anon.get("/healthz"),
            await anon.get("/metrics"),
        ):
            assert response.status_code in (200, 400, 401, 404, 405), response.text
            assert_secured(response)


async def test_a_crash_still_answers_with_the_headers() -> None:
    async def boom(request: Request) -> Response:
        raise RuntimeError("a bug")

    app = Starlette(routes=[Route("/boom", boom)], middleware=[Middleware(SecurityHeaders)])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert_secured(response)
