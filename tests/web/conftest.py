"""Browser fixtures: the built web client served by a real Weft server, and Debian's
Chromium driven by Playwright (headless, fresh profile per browser). Without Chromium these
tests fail loudly, naming the script that installs it; they never skip."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    async_playwright,
    expect,
)

from tests.ai.conftest import assistant_env
from tests.conftest import PASSWORD, StartServer, sign_up
from tests.executor.conftest import EXECUTOR_ENV, docker_engine, remove_kernels
from tests.support.openai_server import FakeOpenAI
from tests.support.server import ROOT, ServerProcess

__all__ = ["PASSWORD", "docker_engine"]

CHROMIUM = Path(os.environ.get("WEFT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
# Assertions poll up to this long: cells run in containers, other browsers sync over sockets.
expect.set_options(timeout=20_000)


@pytest.fixture(scope="session")
def web_dist() -> Path:
    """web/dist, rebuilt first if web/ changed (a quick no-op otherwise)."""
    build = subprocess.run(
        ["bash", str(ROOT / "web" / "build.sh")], capture_output=True, text=True, timeout=300
    )
    if build.returncode != 0:
        pytest.fail(
            f"building the web client failed (run scripts/setup.sh --dev):\n{build.stderr}",
            pytrace=False,
        )
    return ROOT / "web" / "dist"


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is missing ({CHROMIUM}): run scripts/setup.sh --dev", pytrace=False)
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        # launch() gives the browser a fresh temporary profile, removed when it closes.
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Account:
    name: str
    email: str
    token: str


@dataclass
class WebWeft:
    """A Weft server serving the web client, its API, and ways to open pages as people."""

    server: ServerProcess
    api: httpx.AsyncClient
    browser: Browser
    page_errors: list[str] = field(default_factory=list)
    # What the Content-Security-Policy refused in any frame of a page (Chromium's console).
    csp_violations: list[str] = field(default_factory=list)
    # Workspaces made by the test's owner, and people (email, role) who join each of them.
    workspaces: list[str] = field(default_factory=list)
    members: list[tuple[str, str]] = field(default_factory=list)
    accounts: dict[str, Account] = field(default_factory=dict)
    # The fake OpenAI-compatible server the assistant talks to (``web_ai`` only).
    openai: FakeOpenAI | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def server_web_dir(self) -> Path:
        return Path(self.server.env["WEFT_WEB_DIR"])

    async def workspace(self, name: str = "Analysis") -> str:
        response = await self.api.post("/api/workspaces", json={"name": name})
        assert response.status_code == 201, response.text
        workspace_id: str = response.json()["id"]
        self.workspaces.append(workspace_id)
        for email, role in self.members:
            await self.add_member(workspace_id, email, role)
        return workspace_id

    async def notebook(
        self, cells: list[dict[str, Any]], title: str = "Notebook", workspace_id: str | None = None
    ) -> str:
        """A notebook with these cells (nbformat dicts; ids c0, c1, ... unless given)."""
        workspace_id = workspace_id or await self.workspace()
        full = []
        for index, cell in enumerate(cells):
            cell = {"id": f"c{index}", "metadata": {}, **cell}
            if cell.get("cell_type", "code") == "code":
                cell = {"cell_type": "code", "outputs": [], "execution_count": None, **cell}
            full.append(cell)
        notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"title": title}, "cells": full}
        response = await self.api.post(
            f"/api/workspaces/{workspace_id}/notebooks/import", content=json.dumps(notebook)
        )
        assert response.status_code == 201, response.text
        notebook_id: str = response.json()["id"]
        return notebook_id

    async def person(
        self,
        name: str,
        color: str,
        *,
        signed_in: bool = True,
        role: str = "editor",
        share: bool = True,
    ) -> BrowserContext:
        """A browser context (its own storage) for one person, shown to others as ``name``
        (the account's name) in ``color``. Signed in (session cookie) as a new account of
        their own unless ``signed_in`` is False; with ``share`` they are a member (``role``)
        of every workspace the test made through :meth:`workspace`, and of those made later."""
        context = await self.browser.new_context(
            viewport={"width": 1400, "height": 900}, base_url=self.url
        )
        if signed_in:
            email = self.email_for(name)
            token = await sign_up(self.url, email, name)
            self.accounts[name] = Account(name, email, token)
            await context.add_cookies([{"name": "weft_session", "value": token, "url": self.url}])
            if share:
                self.members.append((email, role))
                for workspace_id in self.workspaces:
                    await self.add_member(workspace_id, email, role)
        # Init scripts run in every frame; sandboxed output frames have no localStorage.
        await context.add_init_script(
            f"if (window === window.top) localStorage.setItem('weft.color', {json.dumps(color)});"
        )
        return context

    def email_for(self, name: str) -> str:
        slug = "".join(c for c in name.lower() if c.isalnum()) or "person"
        return f"{slug}-{uuid.uuid4().hex[:6]}@example.org"

    async def add_member(self, workspace_id: str, email: str, role: str) -> None:
        response = await self.api.post(
            f"/api/workspaces/{workspace_id}/members", json={"email": email, "role": role}
        )
        assert response.status_code == 201, response.text

    async def page(self, context: BrowserContext, path: str) -> Page:
        """Open ``path``; any uncaught error in the page fails the test at teardown."""
        page = await context.new_page()
        page.on("pageerror", lambda error: self.page_errors.append(f"{path}: {error}"))
        page.on("console", lambda message: self._console(path, message))
        await page.goto(path)
        return page

    def _console(self, path: str, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.csp_violations.append(f"{path}: {message.text}")

    async def open_notebook(self, context: BrowserContext, notebook_id: str) -> Page:
        page = await self.page(context, f"/notebooks/{notebook_id}")
        await expect(page.locator(".conn-badge")).to_have_attribute("data-state", "online")
        return page


async def _web_server(
    start_server: StartServer, web_dist: Path, instance: str, **extra_env: str
) -> ServerProcess:
    return await start_server(
        **{
            **EXECUTOR_ENV,
            "WEFT_INSTANCE": instance,
            "WEFT_WEB_DIR": str(web_dist),
            "WEFT_ROOM_GRACE_SECONDS": "5",
            **extra_env,
        }
    )


@pytest.fixture
async def web(
    start_server: StartServer, web_dist: Path, browser: Browser
) -> AsyncIterator[WebWeft]:
    """The server and client without needing a kernel."""
    server = await _web_server(start_server, web_dist, f"weft-web-{uuid.uuid4().hex[:8]}")
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=server.auth) as api:
        weft = WebWeft(server, api, browser)
        yield weft
    assert not weft.page_errors, weft.page_errors
    assert not weft.csp_violations, weft.csp_violations


@pytest.fixture
async def web_kernel(
    docker_engine: Any, start_server: StartServer, web_dist: Path, browser: Browser
) -> AsyncIterator[WebWeft]:
    """The server and client, with a Docker engine and the runtime image to run cells."""
    async with kernel_web(docker_engine, start_server, web_dist, browser) as weft:
        yield weft


@contextlib.asynccontextmanager
async def kernel_web(
    docker_engine: Any, start_server: StartServer, web_dist: Path, browser: Browser, **env: str
) -> AsyncIterator[WebWeft]:
    """``web_kernel`` with more settings (``env``)."""
    instance = f"weft-web-{uuid.uuid4().hex[:8]}"
    server = await _web_server(start_server, web_dist, instance, **env)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=server.auth) as api:
            weft = WebWeft(server, api, browser)
            yield weft
        assert not weft.page_errors, weft.page_errors
        assert not weft.csp_violations, weft.csp_violations
    finally:
        server.stop()
        remove_kernels(docker_engine, instance)


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A local OpenAI-compatible server (tests/support/openai_server.py); script its answers
    with ``fake_openai.script(stream(...))`` before asking the assistant."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def web_ai(
    start_server: StartServer, web_dist: Path, browser: Browser, fake_openai: FakeOpenAI
) -> AsyncIterator[WebWeft]:
    """The server and client with the assistant configured to use ``fake_openai`` (no
    kernel: the executor is off). ``web_ai.openai`` is the fake provider."""
    instance = f"weft-web-{uuid.uuid4().hex[:8]}"
    server = await _web_server(start_server, web_dist, instance, **assistant_env(fake_openai))
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=server.auth) as api:
        weft = WebWeft(server, api, browser, openai=fake_openai)
        yield weft
    assert not weft.page_errors, weft.page_errors
    assert not weft.csp_violations, weft.csp_violations


@pytest.fixture
async def web_kernel_ai(
    docker_engine: Any,
    start_server: StartServer,
    web_dist: Path,
    browser: Browser,
    fake_openai: FakeOpenAI,
) -> AsyncIterator[WebWeft]:
    """``web_kernel`` with the assistant configured to use ``fake_openai``: cells run (in
    Docker) and can fail, so the assistant can be asked to fix them."""
    instance = f"weft-web-{uuid.uuid4().hex[:8]}"
    env = assistant_env(fake_openai, WEFT_EXECUTOR="on")
    server = await _web_server(start_server, web_dist, instance, **env)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=server.auth) as api:
            weft = WebWeft(server, api, browser, openai=fake_openai)
            yield weft
        assert not weft.page_errors, weft.page_errors
        assert not weft.csp_violations, weft.csp_violations
    finally:
        server.stop()
        remove_kernels(docker_engine, instance)


def artifact(name: str) -> str:
    ARTIFACTS.mkdir(exist_ok=True)
    return str(ARTIFACTS / name)
