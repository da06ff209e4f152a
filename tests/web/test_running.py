"""Running cells from the browser: one person runs a cell and both see the state change, the
task list, the kernel light and the outputs; run all renders every kind of output (tables,
ANSI streams, Vega-Lite, sandboxed HTML, images, tracebacks); stale cells; interrupt and
restart."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page, expect

from tests.web.conftest import WebWeft, artifact
from tests.web.ui import cell, click_end, editor, insert

pytestmark = [pytest.mark.anyio, pytest.mark.browser, pytest.mark.docker]

ADA = ("Ada Lovelace", "#e5484d")
GRACE = ("Grace Hopper", "#0090ff")

FIRST = """import time
print("hello from the kernel")
time.sleep(1.5)
answer = 41 + 1
answer"""

TABLE_AND_CHART = """import pandas as pd
sales = pd.DataFrame({"month": ["jan", "feb", "mar", "apr"], "revenue": [10.0, 12.5, 13.1, 15.8]})
print("\\x1b[32mgreen\\x1b[0m and \\x1b[1;31mbold red\\x1b[0m")
display({
    "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
    "data": {"values": sales.to_dict("records")},
    "mark": "bar",
    "encoding": {"x": {"field": "month", "type": "nominal", "sort": None},
                 "y": {"field": "revenue", "type": "quantitative"}},
})
sales"""

HTML = """class Page:
    def _repr_html_(self):
        return ("<b>bold html</b><script>try { parent.document.title = 'pwned' }"
                " catch (e) { document.body.append(' blocked: ' + e.name) }</script>")

Page()"""

PLOT = """import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(5, 2.4))
ax.plot(sales.month, sales.revenue, marker="o")
ax.set_title("Revenue by month");"""

ERROR = """def ratio(a, b):
    return a / b

ratio(answer, 0)"""


def state(page: Page, cell_id: str):  # type: ignore[no-untyped-def]
    return expect(cell(page, cell_id))


async def test_one_person_runs_a_cell_and_both_see_state_and_outputs(web_kernel: WebWeft) -> None:
    web = web_kernel
    notebook = await web.notebook(
        [
            {"source": FIRST},
            {"source": TABLE_AND_CHART},
            {"source": HTML},
            {"source": PLOT},
            {"source": ERROR},
        ],
        title="Revenue review",
    )
    ada = await web.open_notebook(await web.person(*ADA), notebook)
    grace = await web.open_notebook(await web.person(*GRACE), notebook)
    for page in (ada, grace):
        await expect(page.locator(".top-kernel .kernel-light")).to_have_attribute(
            "data-state", "none"
        )

    await click_end(ada, "c0")
    await ada.keyboard.press("Shift+Enter")

    # Grace sees it queued or running, in the task list, and the kernel starting or busy.
    await state(grace, "c0").to_have_attribute("data-state", re.compile("queued|running"))
    await expect(grace.locator('.task[data-cell="c0"]')).to_be_visible()
    await expect(grace.locator(".top-kernel .kernel-light")).to_have_attribute(
        "data-state", re.compile("starting|busy")
    )
    await state(grace, "c0").to_have_attribute("data-state", "running")
    await expect(cell(grace, "c0").locator(".run-badge")).to_contain_text(re.compile(r"Running \d"))
    await expect(cell(grace, "c0").locator(".output-stream")).to_have_text(
        "hello from the kernel\n"
    )

    for page in (ada, grace):
        await state(page, "c0").to_have_attribute("data-state", "done")
        await expect(cell(page, "c0").locator(".run-badge")).to_contain_text(re.compile(r"Done in"))
        await expect(cell(page, "c0").locator(".output-result")).to_have_text("42")
        await expect(cell(page, "c0").locator(".exec-count")).to_have_text("[1]")
        await expect(page.locator(".task")).to_have_count(0)
        await expect(page.locator(".top-kernel .kernel-light")).to_have_attribute(
            "data-state", "idle"
        )
    # Shift-Enter moved Ada to the next cell; its symbols show what c0 defined, below the line.
    await expect(ada.locator(".symbols-panel")).to_contain_text("Defined by Cell 2")
    await expect(ada.locator(".symbol-row", has_text="answer")).to_contain_text("int")

    # Run all: every kind of output, for both.
    await ada.get_by_role("button", name="Run all").click()
    for page in (grace, ada):
        await state(page, "c4").to_have_attribute("data-state", "error", timeout=60_000)
        c1 = cell(page, "c1")
        await expect(c1.locator(".df-table thead")).to_contain_text("revenue")
        await expect(c1.locator(".df-table tbody tr")).to_have_count(4)
        await expect(c1.locator(".output-stream .ansi-green-fg")).to_have_text("green")
        await expect(c1.frame_locator("iframe.output-vega").locator("svg.marks")).to_be_visible()
        frame = cell(page, "c2").frame_locator("iframe.output-html")
        await expect(frame.locator("b")).to_have_text("bold html")
        await expect(frame.locator("body")).to_contain_text("blocked: SecurityError")
        image = cell(page, "c3").locator("img.output-image")
        await expect(image).to_be_visible()
        assert await image.evaluate("img => img.naturalWidth") > 100
        error = cell(page, "c4").locator(".output-error")
        await expect(error.locator(".error-name")).to_have_text("ZeroDivisionError")
        await expect(error.locator(".cell-ref").first).to_have_text("Cell 5")
        await expect(error.locator(".traceback")).to_contain_text("return a / b")
        assert await page.title() == "Revenue review · Weft"

    # The symbol table of the error cell shows what it sees, DataFrame schema included.
    await cell(grace, "c4").locator(".cell-head").click()
    sales = grace.locator(".symbol-row", has_text="sales")
    await expect(sales).to_contain_text("DataFrame 4\N{MULTIPLICATION SIGN}2")
    await sales.click()
    await expect(grace.locator(".inspect-card")).to_contain_text(
        "4 rows \N{MULTIPLICATION SIGN} 2 columns"
    )
    await expect(grace.locator(".inspect-card .col-name")).to_have_text(["month", "revenue"])

    # Grace edits c0: "edited since run" for both; re-running it rebinds `answer`, which makes
    # c4 (reads answer) stale. (A re-run that leaves every name bound to the same object, as
    # `answer + 0` would, changes nothing below it: docs/executor.md.)
    await insert(grace, "c0", "\nanswer = answer + 1")
    await state(ada, "c0").to_have_attribute("data-state", "edited")
    await click_end(grace, "c0")
    await grace.keyboard.press("Control+Enter")
    await state(ada, "c4").to_have_attribute("data-state", "stale")
    await state(ada, "c0").to_have_attribute("data-state", "done")

    # Two cursors and every output: the screenshot to look at.
    await click_end(ada, "c1")
    await editor(grace, "c0").click()
    await expect(cell(ada, "c0").locator(".cm-ySelectionInfo")).to_have_text("Grace Hopper")
    await ada.screenshot(path=artifact("notebook-outputs-ada.png"), full_page=True)
    await grace.screenshot(path=artifact("notebook-outputs-grace.png"), full_page=True)


async def test_interrupt_cancels_the_queue_and_restart_replaces_the_kernel(
    web_kernel: WebWeft,
) -> None:
    web = web_kernel
    notebook = await web.notebook(
        [{"source": "import time\nprint('sleeping')\ntime.sleep(20)"}, {"source": "x = 1"}]
    )
    ada = await web.open_notebook(await web.person(*ADA), notebook)
    grace = await web.open_notebook(await web.person(*GRACE), notebook)

    await ada.get_by_role("button", name="Run all").click()
    await expect(cell(grace, "c0").locator(".output-stream")).to_have_text("sleeping\n")
    tasks = grace.locator(".task")
    await expect(tasks).to_have_count(2)
    await expect(tasks.nth(0)).to_have_class(re.compile("task-running"))
    await expect(tasks.nth(1)).to_have_class(re.compile("task-queued"))
    await grace.screenshot(path=artifact("task-list-grace.png"))

    await ada.get_by_role("button", name="Interrupt").click()
    for page in (ada, grace):
        await state(page, "c0").to_have_attribute("data-state", "error")
        await expect(cell(page, "c0").locator(".error-name")).to_have_text("KeyboardInterrupt")
        await state(page, "c1").to_have_attribute("data-state", "cancelled")
        await expect(page.locator(".task")).to_have_count(0)

    await ada.get_by_role("button", name="Restart the kernel").click()
    await ada.get_by_role("dialog").get_by_role("button", name="Restart").click()
    await expect(ada.locator(".toast", has_text="Kernel restarted")).to_be_visible()
    await expect(grace.locator(".top-kernel .kernel-light")).to_have_attribute("data-state", "idle")
