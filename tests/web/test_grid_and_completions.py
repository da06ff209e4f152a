"""A DataFrame's data grid and the kernel's completions in the browser (issue 15, items 6
and 8): a 1,000,000-row frame is paged, sorted and filtered by the kernel without being
shipped, with one view shared by an editor and a viewer, and says so when the kernel is
gone; completions offer what the cells above define (columns and methods of a live frame
included), never a name defined below, and a call shows its signature."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, WebSocket, expect

from tests.conftest import StartServer
from tests.web.conftest import WebWeft, artifact, kernel_web
from tests.web.ui import cell

pytestmark = [pytest.mark.anyio, pytest.mark.browser, pytest.mark.docker]

ADA = ("Ada Lovelace", "#e5484d")
VERA = ("Vera Rubin", "#30a46c")

MILLION = (
    "import pandas as pd, numpy as np\n"
    "n = 1_000_000\n"
    "regions = np.array(['north', 'south', 'east', 'west'])\n"
    "trips = pd.DataFrame({'trip': np.arange(n), 'minutes': (np.arange(n) * 7919) % 1000,\n"
    "                      'region': regions[np.arange(n) % 4]})\n"
    "trips"
)


@pytest.fixture
async def web_kernel(
    docker_engine: Any, start_server: StartServer, web_dist: Path, browser: Browser
) -> AsyncIterator[WebWeft]:
    """With time to build a million-row frame on a busy machine (cells otherwise stop at 6 s)."""
    env = {"WEFT_CELL_TIMEOUT_SECONDS": "120"}
    async with kernel_web(docker_engine, start_server, web_dist, browser, **env) as weft:
        yield weft


def traffic(context: BrowserContext) -> list[int]:
    """Bytes of every WebSocket frame the context's pages receive (the document's sync)."""
    sizes: list[int] = []

    def watch(ws: WebSocket) -> None:
        ws.on("framereceived", lambda payload: sizes.append(len(payload)))

    context.on("page", lambda page: page.on("websocket", watch))
    return sizes


def first_row_value(page: Page, column: int) -> Any:
    """The first row's value in ``column`` (0: the first column after the index)."""
    row = cell(page, "c0").locator(".grid-table tbody tr").first
    return expect(row.locator("td").nth(column))


async def test_the_grid_pages_a_million_rows_without_shipping_them(web_kernel: WebWeft) -> None:
    web = web_kernel
    notebook = await web.notebook([{"source": MILLION}], title="Trips")
    ada_context = await web.person(*ADA)
    vera_context = await web.person(*VERA, role="viewer")
    received = traffic(vera_context)
    ada = await web.open_notebook(ada_context, notebook)
    vera = await web.open_notebook(vera_context, notebook)
    await cell(ada, "c0").locator(".cm-content").click()
    await ada.keyboard.press("Control+Enter")
    for page in (ada, vera):
        grid = cell(page, "c0").locator(".output-grid")
        await expect(grid).to_be_visible(timeout=90_000)
        await expect(grid.locator(".grid-shape")).to_have_text(
            "DataFrame · 1,000,000 rows \N{MULTIPLICATION SIGN} 3 columns"
        )
        await expect(grid.locator("tbody tr")).to_have_count(50)
        await expect(grid.locator("thead .grid-col-type")).to_have_text(["int64", "int64", "str"])
        await expect(grid.locator("thead th").nth(2)).to_contain_text("mean 499.5")
        await expect(grid.locator(".grid-page")).to_have_text("Page 1 of 20,000")

    # Ada sorts by minutes, descending: the kernel sorts; Vera sees the same rows.
    sort = cell(ada, "c0").locator(".grid-sort", has_text="minutes")
    await sort.click()
    await expect(cell(ada, "c0").locator("th[aria-sort=ascending]")).to_have_count(1)
    await sort.click()
    for page in (ada, vera):
        await expect(cell(page, "c0").locator("th[aria-sort=descending]")).to_contain_text(
            "minutes"
        )
        await first_row_value(page, 1).to_have_text("999")
    await expect(cell(vera, "c0").locator(".grid-by")).to_have_text("view by Ada Lovelace")

    # Ada filters to one region; Vera (a viewer) pages on, and Ada follows her.
    grid = cell(ada, "c0").locator(".output-grid")
    await grid.get_by_label("Filter column").select_option("region")
    await grid.get_by_label("Filter value").fill("east")
    await grid.get_by_role("button", name="Filter", exact=True).click()
    for page in (ada, vera):
        await expect(cell(page, "c0").locator(".grid-shape")).to_contain_text("250,000 match")
        await expect(cell(page, "c0").locator(".grid-page")).to_have_text("Page 1 of 5,000")
    await cell(vera, "c0").get_by_role("button", name="Next page").click()
    for page in (ada, vera):
        await expect(cell(page, "c0").locator(".grid-page")).to_have_text("Page 2 of 5,000")
        rows = cell(page, "c0").locator(".grid-table tbody tr")
        await expect(rows.first.locator("td").nth(2)).to_have_text("east")
    await expect(cell(ada, "c0").locator(".grid-by")).to_have_text("view by Vera Rubin")
    await cell(ada, "c0").locator(".output-grid").screenshot(path=artifact("data-grid.png"))

    # Everything the viewer's socket received, the document with its one page included.
    total = sum(received)
    assert total < 400_000, f"the viewer received {total:,} bytes: rows were shipped"

    # After a restart the kernel no longer holds the frame: the grid says so, first page.
    restarted = await web.api.post(f"/api/notebooks/{notebook}/restart")
    assert restarted.status_code == 200
    for page in (ada, vera):
        gone = cell(page, "c0").locator(".grid-gone")
        await expect(gone).to_contain_text("no longer holds this table", timeout=20_000)
        await expect(cell(page, "c0").locator(".grid-page")).to_have_text("Page 1 of 20,000")
        await first_row_value(page, 0).to_have_text("0")
        await expect(cell(page, "c0").get_by_role("button", name="Next page")).to_be_disabled()
    await cell(vera, "c0").locator(".output-grid").screenshot(path=artifact("data-grid-gone.png"))


async def test_kernel_completions_see_only_cells_above_and_calls_show_their_signature(
    web_kernel: WebWeft,
) -> None:
    web = web_kernel
    notebook = await web.notebook(
        [
            {
                "source": "import pandas as pd\nalpha_above = 1\n"
                "sales = pd.DataFrame({'region': ['north'], 'revenue': [1.0]})"
            },
            {"source": ""},
            {"source": "alpha_below = 2"},
        ],
        title="Completions",
    )
    ada = await web.open_notebook(await web.person(*ADA), notebook)
    await ada.get_by_role("button", name="Run all").click()
    await expect(cell(ada, "c2")).to_have_attribute("data-state", "done", timeout=60_000)
    popup = ada.locator(".cm-tooltip-autocomplete")
    await cell(ada, "c1").locator(".cm-content").click()

    # A live frame's columns and methods, from the kernel.
    await ada.keyboard.type("sales.re")
    await expect(popup).to_contain_text("region")
    await expect(popup).to_contain_text("revenue")
    await expect(popup).to_contain_text("column float64")
    await expect(popup).to_contain_text("reindex")
    await ada.keyboard.press("Escape")
    await ada.keyboard.press("Control+a")
    await ada.keyboard.press("Backspace")

    # Names: the cell above's, never the one below.
    await ada.keyboard.type("alpha")
    await expect(popup).to_contain_text("alpha_above")
    await expect(popup).not_to_contain_text("alpha_below")
    await ada.keyboard.press("Escape")
    await ada.keyboard.press("Control+a")
    await ada.keyboard.press("Backspace")

    # A call's parameters, the one being typed marked, with the first doc line.
    await ada.keyboard.type("sales.head(")
    hint = ada.locator(".cm-signature-hint")
    await expect(hint).to_contain_text("sales.head(n")
    await expect(hint.locator(".sig-param.active")).to_have_text(re.compile(r"^n\b"))
    await expect(hint.locator(".sig-doc")).to_contain_text("Return the first `n` rows")
    box = await cell(ada, "c1").bounding_box()
    assert box is not None
    await ada.screenshot(  # the hint is drawn above the line, over the cell's toolbar
        path=artifact("parameter-hint.png"),
        clip={"x": box["x"], "y": box["y"] - 50, "width": box["width"], "height": 150},
    )
    await ada.keyboard.press("Control+Enter")  # running closes the hint
    await expect(hint).to_have_count(0)
    await expect(cell(ada, "c1")).to_have_attribute("data-state", "done", timeout=30_000)
    await cell(ada, "c1").locator(".cm-content").click()
    await ada.keyboard.press("Control+End")
    await ada.keyboard.type("\nsales.rev")
    await expect(popup).to_contain_text("revenue")
    await cell(ada, "c1").screenshot(path=artifact("kernel-completions.png"))
