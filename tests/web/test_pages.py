"""The pages around notebooks, each with its own link: the workspaces list searched as you
type (workspace names filtered in place, notebooks found by the server's search), a
workspace's notebooks (create, import), a notebook opened by its link, and a clear page for a
notebook that does not exist."""

from __future__ import annotations

import json

import anyio
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
    search = page.get_by_role("combobox", name="Search notebooks and workspaces")
    await search.press_sequentially("chu")
    await expect(cards).to_have_count(2)
    await expect(cards.locator("mark").first).to_have_text("Chu")
    await search.press_sequentially("rn d")
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


async def wait_indexed(web: WebWeft, query: str, count: int) -> None:
    """Until the server's search finds ``count`` notebooks for ``query`` (imports are
    indexed within a second or so)."""
    with anyio.fail_after(20):
        while True:
            response = await web.api.get("/api/search", params={"q": query})
            assert response.status_code == 200, response.text
            if len(response.json()["results"]) >= count:
                return
            await anyio.sleep(0.2)


async def test_search_notebooks_as_you_type(web: WebWeft) -> None:
    sales = await web.workspace("Sales team")
    other = await web.workspace("Churn")
    revenue = await web.notebook(
        [
            {"cell_type": "markdown", "source": "# Revenue by region"},
            {"source": "by_region = sales.groupby('region')['revenue'].sum()\nby_region.plot()"},
        ],
        title="Quarterly revenue",
        workspace_id=sales,
    )
    churn = await web.notebook(
        [{"source": "import pandas as pd\nchurned = users.groupby('month').size()"}],
        title="Churn by month",
        workspace_id=other,
    )
    await web.notebook([{"source": "print('nothing to see')"}], title="Other", workspace_id=other)
    await wait_indexed(web, "groupby", 2)
    context = await web.person("Ada Lovelace", "#e5484d")
    page = await web.page(context, "/")
    box = page.get_by_role("combobox", name="Search notebooks and workspaces")
    results = page.get_by_role("listbox", name="Notebooks found").get_by_role("option")

    # A word as it is being typed: both notebooks with it in a cell, each with its title,
    # its workspace and the matching line, the word highlighted.
    await box.press_sequentially("grou", delay=40)
    await expect(results).to_have_count(2)
    first = results.filter(has_text="Quarterly revenue")
    await expect(first.locator(".result-workspace")).to_have_text("Sales team")
    await expect(first.locator(".result-snippet")).to_have_text(
        "by_region = sales.groupby('region')['revenue'].sum()"
    )
    await expect(first.locator(".result-snippet mark")).to_have_text(["groupby"])
    other_result = results.filter(has_text="Churn by month")
    await expect(other_result.locator(".result-workspace")).to_have_text("Churn")
    # One more word narrows it to one notebook (every word must match).
    await box.press_sequentially(" regi", delay=40)
    await expect(results).to_have_count(1)
    await expect(results).to_contain_text("Quarterly revenue")
    marks = results.locator(".result-snippet mark")
    await expect(marks).to_have_text(["region", "groupby", "region"])
    await page.screenshot(path=artifact("search-results.png"))

    # The keyboard: down to the second result, Enter opens it, on the matching cell.
    await box.fill("")
    await expect(page.locator(".search-panel")).to_be_hidden()
    searches: list[str] = []
    page.on("request", lambda r: searches.append(r.url) if "/api/search" in r.url else None)
    await box.press_sequentially("groupby", delay=30)
    await expect(results).to_have_count(2)
    # Asked as one types, but not on every key (debounced).
    assert 1 <= len(searches) < 7, searches
    assert searches[-1].endswith("q=groupby&limit=20"), searches
    await expect(results.nth(0)).to_have_attribute("aria-selected", "true")
    await box.press("ArrowDown")
    await expect(results.nth(1)).to_have_attribute("aria-selected", "true")
    second_title = await results.nth(1).locator(".result-title").text_content()
    second = churn if second_title == "Churn by month" else revenue
    await box.press("Enter")
    await page.wait_for_url(f"**/notebooks/{second}*")
    await expect(page.locator("input.nb-title")).to_have_value(second_title or "")
    await expect(page.locator(".cell.selected")).to_contain_text("groupby")

    # Back to the same search; a typo still finds it; a click opens the notebook.
    await page.go_back()
    await expect(box).to_have_value("groupby")
    await expect(results).to_have_count(2)
    await box.fill("quartrly")
    await expect(results).to_have_count(1)
    await results.first.click()
    await page.wait_for_url(f"**/notebooks/{revenue}*")
    await expect(page.locator("input.nb-title")).to_have_value("Quarterly revenue")


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


async def test_a_link_to_no_page_says_nothing_is_there(web: WebWeft) -> None:
    context = await web.person("Ada Lovelace", "#e5484d")
    page = await web.page(context, "/no/such/page")
    await expect(page.locator("h1")).to_have_text("Nothing here")
    await page.get_by_role("link", name="Go to your workspaces").click()
    await page.wait_for_url(f"{web.url}/")
    search = page.get_by_role("combobox", name="Search notebooks and workspaces")
    await expect(search).to_be_visible()
