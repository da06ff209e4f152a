"""The pages around notebooks, each with its own link: the workspaces list searched as you
type, a workspace's notebooks (create, import), a notebook opened by its link, and a clear
page for a notebook that does not exist."""

from __future__ import annotations

import json

import pytest
from playwright.async_api import expect

from tests.web.conftest import WebWeft, artifact
from tests.web.ui import wait_text

pytestmark = [pytest.mark.anyio, pytest.mark.browser]


async def test_workspaces_search_and_deep_links(web: WebWeft) -> None:
    for name in ("Churn model", "Revenue forecast", "Churn dashboards"):
        await web.workspace(name)
    context = await web.person("Ada Lovelace", "#e5484d")

    page = await web.page(context, "/")
    cards = page.locator(".ws-card")
    await expect(cards).to_have_count(3)
    await page.get_by_role("searchbox", name="Search workspaces").press_sequentially("chu")
    await expect(cards).to_have_count(2)
    await expect(cards.locator("mark").first).to_have_text("Chu")
    await page.get_by_role("searchbox", name="Search workspaces").press_sequentially("rn d")
    await expect(cards).to_have_count(1)
    await expect(cards).to_contain_text("Churn dashboards")
    await page.screenshot(path=artifact("workspaces-search.png"))

    # Into the workspace: no notebooks yet; create one and land in it, at its own URL.
    await cards.click()
    await page.wait_for_url("**/workspaces/*")
    await expect(page.locator("h1")).to_have_text("Churn dashboards")
    await page.get_by_role("button", name="New notebook").first.click()
    await page.wait_for_url("**/notebooks/*")
    await expect(page.locator(".conn-badge")).to_have_attribute("data-state", "online")
    await page.locator(".cell .cm-content").click()
    await page.keyboard.type("print('hi')")

    # The notebook's link works on its own (a fresh load), and shows the same document.
    notebook_id = page.url.rsplit("/", 1)[1]
    again = await web.page(await web.person("Grace Hopper", "#0090ff"), f"/notebooks/{notebook_id}")
    await expect(again.locator(".conn-badge")).to_have_attribute("data-state", "online")
    cell_id = await again.locator(".cell").first.get_attribute("data-cell-id")
    assert cell_id
    await wait_text(again, cell_id, "print('hi')")

    # Import a Jupyter notebook from the workspace page.
    await page.go_back()
    await expect(page.locator(".nb-row")).to_have_count(1)
    ipynb = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [{"cell_type": "markdown", "metadata": {}, "source": "# Imported $x^2$"}],
    }
    async with page.expect_file_chooser() as chooser:
        await page.get_by_role("button", name="Import .ipynb").click()
    await (await chooser.value).set_files(
        files=[
            {
                "name": "report.ipynb",
                "mimeType": "application/json",
                "buffer": json.dumps(ipynb).encode(),
            }
        ]
    )
    await expect(page.locator("input.nb-title")).to_have_value("report")
    await expect(page.locator(".markdown-rendered h1 .katex")).to_be_visible()

    # A link to a notebook that does not exist says so.
    missing = await web.page(context, "/notebooks/00000000-0000-4000-8000-000000000000")
    await expect(missing.locator("h1")).to_have_text("Notebook not found")


async def test_the_server_serves_the_client_at_every_page_link(web: WebWeft) -> None:
    index = await web.api.get("/")
    assert index.status_code == 200
    assert '<div id="app">' in index.text
    assert index.headers["cache-control"] == "no-cache"
    for link in ("/workspaces/abc", "/notebooks/00000000-0000-4000-8000-000000000000"):
        page = await web.api.get(link)
        assert page.status_code == 200, link
        assert page.text == index.text
    asset = next(p for p in (web.server_web_dir / "assets").iterdir() if p.suffix == ".js")
    cached = await web.api.get(f"/assets/{asset.name}")
    assert cached.status_code == 200
    assert "immutable" in cached.headers["cache-control"]
    # Misses that are not pages stay misses: the API answers JSON, assets 404.
    api_miss = await web.api.get("/api/nothing-here")
    assert api_miss.status_code == 404
    assert api_miss.json()["error"]["code"] == "not_found"
    assert (await web.api.get("/assets/gone-1234.js")).status_code == 404
    assert (await web.api.post("/notebooks/x")).status_code in (404, 405)
