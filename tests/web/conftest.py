"""Browser fixtures: the built web client served by a real Weft server, and Debian's
Chromium driven by Playwright (headless, fresh profile per browser). Without Chromium these
tests fail loudly, naming the script that installs it; they never skip."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.conftest import StartServer
from tests.executor.conftest import EXECUTOR_ENV, docker_engine, remove_kernels
from tests.support.server import ROOT, ServerProcess

__all__ = ["docker_engine"]

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
class WebWeft:
    """A Weft server serving the web client, its API, and ways to open pages as people."""

    server: ServerProcess
    api: httpx.AsyncClient
    browser: Browser
    page_errors: list[str] = field(default_factory=list)

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

    async def person(self, name: str, color: str) -> BrowserContext:
        """A browser context (its own storage) whose user appears to others as ``name``."""
        context = await self.browser.new_context(
            viewport={"width": 1400, "height": 900}, base_url=self.url
        )
        # Init scripts run in every frame; sandboxed output frames have no localStorage.
        await context.add_init_script(
            "if (window === window.top) {"
            f"localStorage.setItem('weft.name', {json.dumps(name)});"
            f"localStorage.setItem('weft.color', {json.dumps(color)}); }}"
        )
        return context

    async def page(self, context: BrowserContext, path: str) -> Page:
        """Open ``path``; any uncaught error in the page fails the test at teardown."""
        page = await context.new_page()
        page.on("pageerror", lambda error: self.page_errors.append(f"{path}: {error}"))
        await page.goto(path)
        return page

    async def open_notebook(self, context: BrowserContext, notebook_id: str) -> Page:
        page = await self.page(context, f"/notebooks/{notebook_id}")
        await expect(page.locator(".conn-badge")).to_have_attribute("data-state", "online")
        return page


async def _web_server(start_server: StartServer, web_dist: Path, instance: str) -> ServerProcess:
    return await start_server(
        **EXECUTOR_ENV,
        WEFT_INSTANCE=instance,
        WEFT_WEB_DIR=str(web_dist),
        WEFT_ROOM_GRACE_SECONDS="5",
    )


@pytest.fixture
async def web(
    start_server: StartServer, web_dist: Path, browser: Browser
) -> AsyncIterator[WebWeft]:
    """The server and client without needing a kernel."""
    server = await _web_server(start_server, web_dist, f"weft-web-{uuid.uuid4().hex[:8]}")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as api:
        weft = WebWeft(server, api, browser)
        yield weft
    assert not weft.page_errors, weft.page_errors


@pytest.fixture
async def web_kernel(
    docker_engine: Any, start_server: StartServer, web_dist: Path, browser: Browser
) -> AsyncIterator[WebWeft]:
    """The server and client, with a Docker engine and the runtime image to run cells."""
    instance = f"weft-web-{uuid.uuid4().hex[:8]}"
    server = await _web_server(start_server, web_dist, instance)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as api:
            weft = WebWeft(server, api, browser)
            yield weft
        assert not weft.page_errors, weft.page_errors
    finally:
        server.stop()
        remove_kernels(docker_engine, instance)


def artifact(name: str) -> str:
    ARTIFACTS.mkdir(exist_ok=True)
    return str(ARTIFACTS / name)
