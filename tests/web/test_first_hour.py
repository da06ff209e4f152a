"""The first hour of a Jupyter or Deepnote user (issue 15): exporting from the notebook and
the workspace list gives a valid .ipynb; a traceback links to its cells after a reload and
for someone who joins later; notebook-only access has a breadcrumb that works; revoking a
link is confirmed and the people who lose access are told; the Share dialog lists who has
access and removes them; the cell commands and their shortcut sheet."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from playwright._impl._api_structures import Clip
from playwright.async_api import Browser, Page, expect

from tests.conftest import PASSWORD, StartServer
from tests.web.conftest import WebWeft, artifact
from tests.web.ui import cell, wait_text

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

ADA = ("Ada Lovelace", "#e5484d")
GRACE = ("Grace Hopper", "#0090ff")
KATE = ("Katherine Johnson", "#30a46c")
# Screenshots of the new pieces go to test-artifacts/ under the names docs/images/ uses
# (docs/web.md shows them; copy them there when the pieces change).


def clip(width: float = 1000, height: float = 560) -> Clip:
    """The top left of the page, for screenshots of one piece."""
    return Clip(x=0, y=0, width=width, height=height)


async def downloaded_notebook(page: Page, button_name: str) -> Path:
    async with page.expect_download() as info:
        await page.get_by_role("button", name=button_name).first.click()
    download = await info.value
    path = Path(await download.path())
    assert download.suggested_filename.endswith(".ipynb"), download.suggested_filename
    return path


async def test_export_downloads_a_valid_ipynb_from_the_notebook_and_the_list(
    web: WebWeft,
) -> None:
    workspace = await web.workspace("Reports")
    notebook = await web.notebook(
        [
            {"cell_type": "markdown", "source": "# Revenue"},
            {"source": "total = 41 + 1\ntotal"},
        ],
        title="Revenue",
        workspace_id=workspace,
    )
    context = await web.person(*ADA)
    page = await web.open_notebook(context, notebook)
    path = await downloaded_notebook(page, "Download as .ipynb")
    exported = nbformat.read(str(path), as_version=4)
    nbformat.validate(exported)
    assert [c.cell_type for c in exported.cells] == ["markdown", "code"]
    assert exported.cells[1].source == "total = 41 + 1\ntotal"
    await expect(page.locator(".toast", has_text="Export failed")).to_have_count(0)

    # The same from the workspace's list of notebooks.
    listing = await web.page(context, f"/workspaces/{workspace}")
    row = listing.locator(".nb-row", has_text="Revenue")
    async with listing.expect_download() as info:
        await row.get_by_role("button", name="Download as .ipynb").click()
    from_list = nbformat.read(await (await info.value).path(), as_version=4)
    nbformat.validate(from_list)
    assert json.dumps(from_list, sort_keys=True) == json.dumps(exported, sort_keys=True)
    await expect(listing.locator(".toast", has_text="Export failed")).to_have_count(0)


FAILING = [
    {"source": "def ratio(a, b):\n    return a / b"},
    {"source": "ratio(1, 0)"},
    {"source": "if True print('no colon')"},
]


@pytest.mark.docker
async def test_a_traceback_links_to_its_cells_after_a_reload_and_for_late_joiners(
    web_kernel: WebWeft,
) -> None:
    web = web_kernel
    notebook = await web.notebook(FAILING, title="Failing")
    ada = await web.open_notebook(await web.person(*ADA), notebook)
    await ada.get_by_role("button", name="Run all").click()

    async def links_right(page: Page) -> None:
        error = cell(page, "c1").locator(".output-error")
        await expect(error.locator(".error-name")).to_have_text("ZeroDivisionError")
        # Both frames: the call in Cell 2 and the division in Cell 1.
        await expect(error.locator(".traceback .cell-ref")).to_have_text(["Cell 2", "Cell 1"])
        syntax = cell(page, "c2").locator(".output-error")
        await expect(syntax.locator(".error-name")).to_have_text("SyntaxError")
        # The first line names the cell too ("invalid syntax (<cell …>, line 1)").
        await expect(syntax.locator(".error-value .cell-ref")).to_have_text("Cell 3")
        await expect(syntax.locator(".error-value")).to_contain_text("line 1")
        for scope in (error, syntax):
            await expect(scope).not_to_contain_text("<cell ")
        # The line each error names is underlined in the cell's editor.
        await expect(cell(page, "c1").locator(".cm-error-line")).to_have_text("ratio(1, 0)")
        await expect(cell(page, "c2").locator(".cm-error-line")).to_have_count(1)
        await expect(cell(page, "c0").locator(".cm-error-line")).to_have_count(0)

    await expect(cell(ada, "c2").locator(".output-error")).to_be_visible(timeout=60_000)
    await links_right(ada)
    await ada.reload()
    await expect(ada.locator(".conn-badge")).to_have_attribute("data-state", "online")
    await links_right(ada)
    # Someone who opens the notebook later sees the same traceback, and its links work.
    grace = await web.open_notebook(await web.person(*GRACE), notebook)
    await links_right(grace)
    await cell(grace, "c1").locator(".traceback .cell-ref", has_text="Cell 1").click()
    await expect(cell(grace, "c0")).to_have_class(re.compile(r"\bselected\b"))
    await grace.screenshot(path=artifact("traceback-late-joiner.png"))
    await cell(grace, "c1").screenshot(path=artifact("traceback-links.png"))


def not_found_requests(page: Page) -> list[str]:
    """Every request of the page answered 404 (the console's "Failed to load resource")."""
    misses: list[str] = []
    page.on("response", lambda r: misses.append(r.url) if r.status == 404 else None)
    return misses


async def test_sharing_shows_who_has_access_and_revoking_tells_those_who_lose_it(
    web: WebWeft,
) -> None:
    ada_context = await web.person(*ADA, role="owner")
    kate_context = await web.person(*KATE)
    workspace = await web.workspace("Planning")
    notebook = await web.notebook(
        [{"cell_type": "code", "source": "plan = 1"}], title="Plan", workspace_id=workspace
    )
    ada = await web.open_notebook(ada_context, notebook)
    await ada.locator(".share-btn").click()
    dialog = ada.get_by_role("dialog", name="Share this notebook")
    await dialog.get_by_role("button", name="Create link").click()
    url = await dialog.get_by_label("Share link URL").input_value()
    await dialog.get_by_role("button", name="Close").click()

    # Grace has an account but is not a member: the link gives her this notebook only, and
    # her breadcrumb names the workspace without linking to a page she cannot open.
    grace_context = await web.person(*GRACE, share=False)
    grace = await grace_context.new_page()
    misses = not_found_requests(grace)
    await grace.goto(url)
    await grace.get_by_role("button", name="Open as Grace Hopper").click()
    await grace.wait_for_url(f"**/notebooks/{notebook}")
    await expect(grace.locator(".conn-badge")).to_have_attribute("data-state", "online")
    crumbs = grace.locator(".crumbs")
    await expect(crumbs.locator(".crumb-plain")).to_have_text("Planning")
    await expect(crumbs.locator(f'a[href="/workspaces/{workspace}"]')).to_have_count(0)
    await expect(crumbs.locator("a.crumb")).to_have_count(0)
    await grace.get_by_role("tab", name="Files").click()
    await expect(grace.get_by_test_id("files-not-shared")).to_be_visible()
    assert not [m for m in misses if "/api/workspaces/" in m], misses
    # A member's breadcrumb still links to the workspace.
    await expect(ada.locator(f'.crumbs a[href="/workspaces/{workspace}"]')).to_have_text("Planning")

    vera = await web.page(await web.person("guest", "#8e4ec6", signed_in=False), url)
    await vera.get_by_label("Your name", exact=True).fill("Vera Viewer")
    await vera.get_by_role("button", name="Continue as guest").click()
    await vera.wait_for_url(f"**/notebooks/{notebook}")
    await expect(vera.locator(".conn-badge")).to_have_attribute("data-state", "online")
    kate = await web.open_notebook(kate_context, notebook)

    # The Share dialog lists everyone and through what.
    await ada.locator(".share-btn").click()
    dialog = ada.get_by_role("dialog", name="Share this notebook")
    people = dialog.get_by_role("list", name="People with access").get_by_role("listitem")
    await expect(people.filter(has_text="Ada Lovelace")).to_contain_text("Member of the workspace")
    await expect(people.filter(has_text="Katherine Johnson")).to_contain_text("Can edit")
    await expect(people.filter(has_text="Grace Hopper")).to_contain_text(
        "This notebook only · through a link"
    )
    await expect(people.filter(has_text="Vera Viewer (guest)")).to_contain_text("Guest")
    await expect(dialog.locator(".share-row")).to_contain_text("used 2 times")
    await ada.screenshot(path=artifact("share-who-has-access-page.png"))
    await dialog.screenshot(path=artifact("share-who-has-access.png"))

    # Revoking asks first and says what it does; Cancel keeps the link.
    await dialog.locator(".share-row").get_by_role("button", name="Revoke link").click()
    sure = ada.get_by_role("dialog", name="Revoke this link?")
    await expect(sure).to_contain_text("2 people who joined through it lose the access")
    await sure.get_by_role("button", name="Cancel").click()
    await expect(dialog.locator(".share-row")).to_have_count(1)
    await dialog.locator(".share-row").get_by_role("button", name="Revoke link").click()
    await (
        ada.get_by_role("dialog", name="Revoke this link?")
        .get_by_role("button", name="Revoke link")
        .click()
    )
    await expect(dialog.locator(".share-row")).to_have_count(0)
    await expect(people.filter(has_text="Grace Hopper")).to_have_count(0)
    await expect(people.filter(has_text="Vera Viewer")).to_have_count(0)

    # Both are told what happened, not "not found"; also after a reload.
    for page in (grace, vera):
        ended = page.locator(".access-ended")
        await expect(ended.locator("h1")).to_have_text("Your access to “Plan” has ended")
        await expect(ended).to_contain_text("was revoked, or someone who manages the notebook")
    await grace.screenshot(path=artifact("access-ended.png"), clip=clip(1400, 300))
    await grace.reload()
    await expect(grace.locator(".access-ended h1")).to_have_text("Your access to “Plan” has ended")
    await vera.reload()
    await expect(vera.locator(".access-ended")).to_contain_text("Your access to “Plan” has ended")

    # The owner removes a member from the same list; she is told too.
    await (
        people.filter(has_text="Katherine Johnson")
        .get_by_role("button", name="Remove access of Katherine Johnson")
        .click()
    )
    sure = ada.get_by_role("dialog", name="Remove Katherine Johnson's access?")
    await expect(sure).to_contain_text("leaves the workspace")
    await sure.get_by_role("button", name="Remove access").click()
    await expect(people.filter(has_text="Katherine Johnson")).to_have_count(0)
    await expect(kate.locator(".access-ended h1")).to_have_text("Your access to “Plan” has ended")
    members = (await web.api.get(f"/api/workspaces/{workspace}/members")).json()["members"]
    assert "Katherine Johnson" not in {m["name"] for m in members}


async def test_weft_serve_serves_the_built_client_by_default(
    start_server: StartServer,
    web_dist: Path,
    browser: Browser,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`weft serve` as a person starts it, with no WEFT_WEB_DIR: the built web/dist."""
    monkeypatch.delenv("WEFT_WEB_DIR", raising=False)
    assert (web_dist / "index.html").is_file()
    server = await start_server()
    assert f"weft: web client at http://127.0.0.1:{server.port}/" in server.log_text()
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=server.auth) as api:
        weft = WebWeft(server, api, browser)
        context = await browser.new_context(base_url=server.url)
        page = await weft.page(context, "/")
        await page.wait_for_url("**/signin?next=%2F")
        await expect(page.locator("h1")).to_have_text("Sign in")
        await context.close()
    assert not weft.page_errors, weft.page_errors
    assert not weft.csp_violations, weft.csp_violations

    # Pointed at a directory without a client, it says so at start, and serves the API only.
    empty = tmp_path / "no-client"
    empty.mkdir()
    bare = await start_server(WEFT_WEB_DIR=str(empty))
    log = bare.log_text()
    assert f"weft: no web client ({empty} has no index.html): serving the API only" in log, log
    assert "bash web/build.sh" in log
    async with httpx.AsyncClient(base_url=bare.url, timeout=30) as anon:
        assert (await anon.get("/")).status_code == 404
        assert (await anon.get("/healthz")).status_code == 200


CELL_SOURCES = """() => [...document.querySelectorAll('.cell')].map((el) => {
  const copy = el.querySelector('.cm-content').cloneNode(true)
  copy.querySelectorAll('.cm-ySelectionCaret, .cm-widgetBuffer, .cm-placeholder')
    .forEach((n) => n.remove())
  return [...copy.querySelectorAll('.cm-line')].map((l) => l.textContent).join('\\n')
})"""


async def sources(page: Page) -> list[str]:
    found: list[str] = await page.evaluate(CELL_SOURCES)
    return found


async def wait_sources(page: Page, want: list[str]) -> None:
    try:
        await page.wait_for_function(
            f"(want) => JSON.stringify(({CELL_SOURCES})()) === JSON.stringify(want)",
            arg=want,
            timeout=10_000,
        )
    except Exception:
        raise AssertionError(f"cells are {await sources(page)}, expected {want}") from None


def printed(text: str) -> dict[str, object]:
    return {
        "source": f"print({text!r})",
        "outputs": [{"output_type": "stream", "name": "stdout", "text": f"{text}\n"}],
        "execution_count": 1,
    }


async def test_cells_are_cut_copied_pasted_moved_and_cleared_from_the_keyboard(
    web: WebWeft,
) -> None:
    notebook = await web.notebook(
        [printed("one"), printed("two"), printed("three"), printed("four")], title="Cells"
    )
    ada = await web.open_notebook(await web.person(*ADA), notebook)
    grace = await web.open_notebook(await web.person(*GRACE), notebook)
    one, two, three, four = "print('one')", "print('two')", "print('three')", "print('four')"
    await wait_sources(ada, [one, two, three, four])

    # Select the second and third cells: click, then Shift-↓; both are marked.
    await cell(ada, "c1").locator(".cell-label").click()
    await ada.keyboard.press("Shift+ArrowDown")
    await expect(ada.locator(".cell.marked")).to_have_count(2)
    await ada.screenshot(path=artifact("multi-select.png"), clip=clip())
    # Cut them (x), select the last cell, paste below it (v): for Grace too.
    await ada.keyboard.press("x")
    await wait_sources(ada, [one, four])
    await expect(ada.locator(".toast", has_text="2 cells cut")).to_be_visible()
    await ada.keyboard.press("ArrowDown")
    await ada.keyboard.press("v")
    await wait_sources(ada, [one, four, two, three])
    await wait_sources(grace, [one, four, two, three])
    # The pasted cells are selected: Alt-↑ moves both above "four".
    await expect(ada.locator(".cell.marked")).to_have_count(2)
    await ada.keyboard.press("Alt+ArrowUp")
    await wait_sources(grace, [one, two, three, four])
    # Copy the first cell (c) and paste it above (Shift-V): a new cell, same text and output.
    await cell(ada, "c0").locator(".cell-label").click()
    await ada.keyboard.press("c")
    await ada.keyboard.press("Shift+V")
    await wait_sources(grace, [one, one, two, three, four])
    assert await ada.locator(".cell").first.get_attribute("data-cell-id") != "c0"
    await expect(ada.locator(".cell").first.locator(".output-stream")).to_have_text("one\n")

    # Clear one cell's outputs from its toolbar, then all of them from the top bar.
    await cell(ada, "c3").get_by_role("button", name="Clear outputs").click()
    await expect(cell(grace, "c3").locator(".output")).to_have_count(0)
    await expect(grace.locator(".output-stream")).to_have_count(4)
    await ada.get_by_role("button", name="Clear all outputs").click()
    await expect(grace.locator(".output")).to_have_count(0)

    # d d deletes the selection; a / b add a cell and stay in command mode (Enter edits it).
    await ada.locator(".cell").nth(2).locator(".cell-label").click()
    await ada.keyboard.press("Shift+ArrowDown")
    await ada.keyboard.press("d")
    await ada.keyboard.press("d")
    await wait_sources(grace, [one, one, four])
    await ada.keyboard.press("b")
    await wait_sources(ada, [one, one, four, ""])
    await expect(ada.locator(".cell").nth(3)).to_have_class(re.compile(r"\bselected\b"))
    await expect(ada.locator(".cm-editor.cm-focused")).to_have_count(0)
    await ada.keyboard.press("Enter")
    await ada.keyboard.type("five = 5")
    await wait_sources(grace, [one, one, four, "five = 5"])

    # The shortcut sheet lists them (h in command mode).
    await ada.keyboard.press("Escape")
    await ada.evaluate("document.querySelectorAll('.toast').forEach((t) => t.remove())")
    await ada.keyboard.press("h")
    sheet = ada.get_by_role("dialog", name="Keyboard shortcuts")
    for what in ("Cut / copy the selected cells", "Interrupt", "Restart the kernel", "Paste above"):
        await expect(sheet).to_contain_text(what)
    await sheet.screenshot(path=artifact("shortcuts.png"))


@pytest.mark.docker
async def test_the_running_cell_stops_from_its_button_and_from_i_i_and_0_0_restarts(
    web_kernel: WebWeft,
) -> None:
    web = web_kernel
    notebook = await web.notebook(
        [{"source": "import time\nprint('sleeping')\ntime.sleep(30)"}, {"source": "x = 1\nx"}],
        title="Long",
    )
    ada = await web.open_notebook(await web.person(*ADA), notebook)
    grace = await web.open_notebook(await web.person(*GRACE), notebook)

    # The running cell's button stops it, for whoever presses it.
    await cell(ada, "c0").get_by_role("button", name="Run cell").click()
    await expect(cell(grace, "c0").locator(".output-stream")).to_have_text(
        "sleeping\n", timeout=60_000
    )
    stop = cell(grace, "c0").get_by_role("button", name="Stop cell")
    await expect(stop).to_be_visible()
    await grace.screenshot(path=artifact("stop-running-cell.png"), clip=clip())
    await stop.click()
    for page in (ada, grace):
        await expect(cell(page, "c0").locator(".error-name")).to_have_text("KeyboardInterrupt")
        await expect(cell(page, "c0").get_by_role("button", name="Stop cell")).to_have_count(0)

    # I, I in command mode interrupts.
    await cell(ada, "c0").get_by_role("button", name="Run cell").click()
    await expect(cell(ada, "c0").get_by_role("button", name="Stop cell")).to_be_visible()
    await expect(cell(ada, "c0").locator(".output-stream")).to_have_text("sleeping\n")
    await cell(ada, "c1").locator(".cell-label").click()
    await ada.keyboard.press("i")
    await ada.keyboard.press("i")
    await expect(cell(grace, "c0").locator(".error-name")).to_have_text("KeyboardInterrupt")
    await expect(cell(grace, "c0")).to_have_attribute("data-state", "error")

    # 0, 0 restarts the kernel, after asking.
    await cell(ada, "c1").get_by_role("button", name="Run cell").click()
    await expect(cell(grace, "c1").locator(".output-result")).to_have_text("1")
    await ada.keyboard.press("0")
    await ada.keyboard.press("0")
    await (
        ada.get_by_role("dialog", name="Restart the kernel?")
        .get_by_role("button", name="Restart")
        .click()
    )
    await expect(ada.locator(".toast", has_text="Kernel restarted")).to_be_visible()
    await expect(grace.locator(".top-kernel .kernel-light")).to_have_attribute(
        "data-state", re.compile("none|idle|starting")
    )


VEGA_LITE: dict[str, Any] = {
    "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
    "title": "Revenue by month",
    "width": 1100,
    "data": {"values": [{"m": "jan", "r": 10}, {"m": "feb", "r": 12}]},
    "mark": "bar",
    "encoding": {
        "x": {"field": "m", "type": "nominal"},
        "y": {"field": "r", "type": "quantitative"},
    },
}


async def test_polish_top_bar_banner_chart_menu_files_insert_and_joining_after_sign_up(
    web: WebWeft,
) -> None:
    workspace = await web.workspace("Finance and revenue team")
    cells: list[dict[str, Any]] = [
        {"source": "import pandas as pd\n"},
        {
            "source": "chart",
            "outputs": [
                {
                    "output_type": "display_data",
                    "data": {"application/vnd.vegalite.v5+json": VEGA_LITE},
                    "metadata": {},
                }
            ],
        },
    ]
    cells += [{"source": f"step_{i} = {i}"} for i in range(12)]
    notebook = await web.notebook(
        cells,
        title="Quarterly revenue review",
        workspace_id=workspace,
    )
    upload = await web.api.put(
        f"/api/workspaces/{workspace}/files/sales.csv", content=b"month,revenue\njan,10\n"
    )
    assert upload.status_code == 201, upload.text
    ada = await web.open_notebook(await web.person(*ADA), notebook)

    # At 1400 px the breadcrumb shows the workspace and the title in full.
    await ada.screenshot(path=artifact("top-bar-1400.png"), clip=clip(1400, 56))
    title = ada.locator("input.nb-title")
    assert await title.evaluate("i => i.scrollWidth <= i.clientWidth"), "title cut"
    crumb = ada.locator(".crumbs a.crumb", has_text="Finance and revenue team")
    assert await crumb.evaluate("a => a.scrollWidth <= a.clientWidth"), "workspace name cut"

    # The chart's menu button sits beside the chart, not over it, even when the chart is
    # wider than the output (the output scrolls sideways).
    frame = cell(ada, "c1").frame_locator("iframe.output-vega")
    await expect(frame.locator("svg.marks")).to_be_visible()
    menu = await frame.locator(".vega-embed summary").bounding_box()
    chart = await frame.locator("svg.marks").bounding_box()
    assert menu
    assert chart
    assert menu["x"] >= chart["x"] + chart["width"] - 1, (menu, chart)

    # Files: "insert code" goes into the selected cell at the cursor, without a second import.
    await cell(ada, "c0").locator(".cm-content").click()
    await ada.keyboard.press("Control+End")
    await ada.get_by_role("tab", name="Files").click()
    row = ada.locator(".file-row", has_text="sales.csv")
    insert_code = row.get_by_role("button", name="Insert code that reads this file")
    await expect(insert_code.locator(".icon-insertCode")).to_have_count(1)
    await insert_code.click()
    await wait_text(
        ada, "c0", 'import pandas as pd\nsales = pd.read_csv("sales.csv")\nsales.head()'
    )
    await expect(ada.locator(".cell")).to_have_count(14)

    # A link that was used once says so in words; opened signed out, "create one" signs up
    # and lands in the notebook without another click.
    await ada.locator(".share-btn").click()
    dialog = ada.get_by_role("dialog", name="Share this notebook")
    await dialog.get_by_label("Link role").select_option("viewer")
    await dialog.get_by_role("button", name="Create link").click()
    url = await dialog.get_by_label("Share link URL").input_value()
    await expect(dialog.locator(".share-row")).to_contain_text("not used yet")
    await dialog.get_by_role("button", name="Close").click()
    kate = await web.page(await web.person("nobody", "#30a46c", signed_in=False), url)
    await kate.get_by_role("link", name="create one").click()
    await kate.get_by_label("Name", exact=True).fill("Katherine Johnson")
    await kate.get_by_label("Email", exact=True).fill(web.email_for("Katherine Johnson"))
    await kate.get_by_label("Password", exact=True).fill(PASSWORD)
    await kate.get_by_role("button", name="Create account").click()
    await kate.wait_for_url(f"**/notebooks/{notebook}")
    await expect(kate.locator(".view-only-badge")).to_have_text("View only")
    await ada.locator(".share-btn").click()
    await expect(dialog.locator(".share-row")).to_contain_text("used 1 time ")

    # A viewer's banner scrolls away with the page instead of covering the sidebar.
    banner = kate.locator(".banner-readonly")
    await expect(banner).to_be_visible()
    await kate.mouse.wheel(0, 1500)
    # A function, not an expression: polling an expression is an eval, which the CSP refuses.
    await kate.wait_for_function("() => window.scrollY > 300")
    card = await kate.locator(".nb-sidebar .side-card").first.bounding_box()
    assert card is not None
    on_top = await kate.evaluate(
        "([x, y]) => !!document.elementFromPoint(x, y)?.closest('.nb-sidebar')",
        [card["x"] + 20, card["y"] + 8],
    )
    assert on_top, "something covers the sidebar's first card"


async def test_the_completion_popup_closes_on_run_and_stays_under_the_top_bar(
    web: WebWeft,
) -> None:
    notebook = await web.notebook(
        [{"source": ""}] + [{"source": f"step_{i} = {i}"} for i in range(10)], title="Typing"
    )
    ada = await web.open_notebook(await web.person(*ADA), notebook)
    popup = ada.locator(".cm-tooltip-autocomplete")

    # Scrolled so that the line being typed is just under the top bar: the popup below it
    # reaches up into the bar's place, and the bar stays on top.
    await cell(ada, "c1").locator(".cm-content").click()
    await ada.keyboard.press("Control+End")
    await ada.keyboard.type("\npri")
    await expect(popup).to_be_visible()
    await expect(popup).to_contain_text("print")
    line = await cell(ada, "c1").locator(".cm-activeLine").bounding_box()
    bar = await ada.locator(".topbar").bounding_box()
    assert line
    assert bar
    await ada.evaluate(f"window.scrollBy(0, {line['y'] + line['height'] - bar['height'] + 20})")
    await ada.wait_for_timeout(200)  # CodeMirror places tooltips on the next frame
    box = await popup.bounding_box()
    assert box
    assert box["y"] < bar["height"], (box, bar)
    inside_bar = await ada.evaluate(
        "([x, y]) => !!document.elementFromPoint(x, y)?.closest('.topbar')",
        [box["x"] + 10, (box["y"] + bar["height"]) / 2],
    )
    assert inside_bar, "the completion popup is drawn over the top bar"
    await ada.evaluate("window.scrollTo(0, 0)")

    # Running the cell closes the popup (the text is committed; Shift-Enter moves on).
    await cell(ada, "c0").locator(".cm-content").click()
    await ada.keyboard.type("pri")
    await expect(popup).to_be_visible()
    await ada.keyboard.press("Shift+Enter")
    await expect(popup).to_have_count(0)
    await expect(cell(ada, "c1")).to_have_class(re.compile(r"\bselected\b"))
    await ada.wait_for_timeout(300)
    await expect(popup).to_have_count(0)


@pytest.mark.docker
async def test_a_sql_cell_names_its_result_in_the_toolbar(web_kernel: WebWeft) -> None:
    web = web_kernel
    notebook = await web.notebook(
        [
            {
                "source": "import pandas as pd\nsales = pd.DataFrame("
                "{'region': ['north', 'south', 'north'], 'revenue': [1.0, 2.0, 3.0]})"
            },
            {
                "source": "SELECT region, sum(revenue) AS total FROM sales\n"
                "GROUP BY region ORDER BY region",
                "metadata": {"language": "sql"},
            },
            {"source": "by_region.shape"},
        ],
        title="Regions",
    )
    ada = await web.open_notebook(await web.person(*ADA), notebook)
    grace = await web.open_notebook(await web.person(*GRACE), notebook)

    # Only SQL cells have a result name; it is set in the toolbar and shared.
    await expect(cell(ada, "c0").get_by_label("Result name")).to_be_hidden()
    name = cell(ada, "c1").get_by_label("Result name")
    await expect(name).to_have_attribute("placeholder", "_sql")
    await name.fill("by region")
    await expect(name).to_have_class(re.compile(r"\binvalid\b"))
    await name.fill("by_region")
    await name.press("Enter")
    await expect(cell(grace, "c1").get_by_label("Result name")).to_have_value("by_region")

    await ada.get_by_role("button", name="Run all").click()
    for page in (ada, grace):
        await expect(cell(page, "c2").locator(".output-result")).to_have_text(
            "(2, 2)", timeout=60_000
        )
        await expect(cell(page, "c1").locator(".df-table tbody tr")).to_have_count(2)
    # The symbol table shows the name with its schema.
    await cell(ada, "c1").locator(".cell-label").click()
    row = ada.locator(".symbol-row", has_text="by_region")
    await expect(row).to_contain_text("DataFrame 2\N{MULTIPLICATION SIGN}2")
    await row.click()
    await expect(ada.locator(".inspect-card .col-name")).to_have_text(["region", "total"])
    await ada.screenshot(path=artifact("sql-result-name.png"), clip=clip(1400))

    # A new SQL cell's placeholder says SQL.
    await ada.get_by_role("button", name="Code").last.click()
    fresh = ada.locator(".cell").last
    await fresh.get_by_label("Language").select_option("sql")
    await expect(fresh.locator(".cm-placeholder")).to_contain_text("SQL: SELECT")


@pytest.mark.docker
async def test_completions_offer_the_names_above_and_never_those_defined_below(
    web_kernel: WebWeft,
) -> None:
    web = web_kernel
    notebook = await web.notebook(
        [
            {"source": "alpha_above = 1\ndef alpha_fn(x):\n    return x"},
            {"source": ""},
            {"source": "alpha_below = 2"},
        ],
        title="Names",
    )
    ada = await web.open_notebook(await web.person(*ADA), notebook)
    await ada.get_by_role("button", name="Run all").click()
    await expect(cell(ada, "c2")).to_have_attribute("data-state", "done", timeout=60_000)
    await cell(ada, "c1").locator(".cm-content").click()
    await ada.keyboard.type("alpha")
    popup = ada.locator(".cm-tooltip-autocomplete")
    await expect(popup).to_contain_text("alpha_above")
    await expect(popup).to_contain_text("alpha_fn")
    await expect(popup).not_to_contain_text("alpha_below")
