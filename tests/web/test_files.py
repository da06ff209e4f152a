"""The files panel: upload a CSV (with progress), see its columns, read it in a cell and find
the DataFrame's schema in the symbol table; download it; delete it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import FilePayload, expect

from tests.web.conftest import WebWeft, artifact

pytestmark = [pytest.mark.anyio, pytest.mark.browser, pytest.mark.docker]


def sales_csv(rows: int) -> bytes:
    lines = ["month,revenue"]
    lines += [f"m{i % 12 + 1:02d},{10 + (i % 97) * 0.25:.2f}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


async def test_upload_a_csv_read_it_and_see_its_schema(web_kernel: WebWeft, tmp_path: Path) -> None:
    web = web_kernel
    workspace = await web.workspace("Sales")
    notebook = await web.notebook(
        [{"source": "# the data\nimport pandas as pd"}], workspace_id=workspace
    )
    context = await web.person("Ada Lovelace", "#e5484d")
    page = await web.open_notebook(context, notebook)
    await page.get_by_role("tab", name="Files").click()
    panel = page.locator(".files-panel")
    await expect(panel).to_contain_text("No files yet")

    # A slow uplink, so the upload's progress shows.
    cdp = await context.new_cdp_session(page)
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 400_000},
    )
    data = sales_csv(60_000)
    assert len(data) > 600_000
    await panel.get_by_test_id("file-input").set_input_files(
        files=[FilePayload(name="sales.csv", mimeType="text/csv", buffer=data)]
    )
    progress = panel.locator(".upload-item .upload-pct")
    await expect(progress).to_have_text(re.compile(r"^[1-9]\d?%$"))
    await page.screenshot(path=artifact("files-uploading.png"))
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    row = panel.locator('.file-row[data-path="sales.csv"]')
    await expect(row).to_contain_text("sales.csv")
    await expect(page.locator(".toast", has_text="Uploaded sales.csv")).to_be_visible()

    # Its columns, from the server's schema sniffing.
    await row.get_by_role("button", name="sales.csv", exact=True).click()
    await expect(row.locator(".file-schema")).to_contain_text("CSV · 2 columns")
    await expect(row.locator(".file-schema .col-name")).to_have_text(["month", "revenue"])

    # Read it into the selected cell (which imports pandas already: not again) and run it:
    # the symbol table shows the DataFrame and its schema.
    await row.hover()
    await row.get_by_role("button", name="Insert code").click()
    cells = page.locator(".cells > .cell")
    await expect(cells).to_have_count(1)
    new = cells.nth(0)
    await expect(new.locator(".cm-content")).to_contain_text('sales = pd.read_csv("sales.csv")')
    assert (await new.locator(".cm-content").inner_text()).count("import pandas") == 1
    await page.keyboard.press("Shift+Enter")
    await expect(new).to_have_attribute("data-state", "done", timeout=60_000)
    await expect(new.locator(".df-table tbody tr")).to_have_count(5)
    await expect(page.locator(".cells > .cell")).to_have_count(2)  # Shift-Enter added one

    await page.get_by_role("tab", name="Symbols").click()
    symbol = page.locator(".symbol-row", has_text="sales")
    await expect(symbol).to_contain_text("DataFrame 60,000\N{MULTIPLICATION SIGN}2")
    await symbol.click()
    inspector = page.locator(".inspect-card")
    await expect(inspector).to_contain_text("60,000 rows \N{MULTIPLICATION SIGN} 2 columns")
    await expect(inspector.locator(".col-name")).to_have_text(["month", "revenue"])
    await expect(inspector.locator(".col-type")).to_have_text([re.compile(".+"), "float64"])
    await new.locator(".cell-head").click()
    await expect(page.locator(".symbols-panel")).to_contain_text("Defined by Cell 1")
    await page.screenshot(path=artifact("files-symbols.png"))

    # Download it, then delete it (from the workspace page's Files tab, a deep link).
    await page.get_by_role("tab", name="Files").click()
    await row.hover()
    async with page.expect_download() as info:
        await row.get_by_role("button", name="Download sales.csv").click()
    download = await info.value
    assert download.suggested_filename == "sales.csv"
    saved = tmp_path / "sales.csv"
    await download.save_as(saved)
    assert saved.read_bytes() == data

    files_page = await web.page(context, f"/workspaces/{workspace}?tab=files")
    files_row = files_page.locator('.file-row[data-path="sales.csv"]')
    await expect(files_row).to_be_visible()
    await files_row.hover()
    await files_row.get_by_role("button", name="Delete sales.csv").click()
    await files_page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    await expect(files_row).to_have_count(0)
    await expect(files_page.locator(".files-panel")).to_contain_text("No files yet")
