"""The Configuration panel: an editor adds a dependency, everyone sees the environment being
prepared (which package, how far) and what it resolved to; a viewer sees it read-only; a cell
then imports the package (and a plotly figure from the default runtime is drawn); a bad
requirement shows its named error. And a workspace owner switches its kernels' network, which
others see read-only. A real package index on
127.0.0.1 (slowed down, so the progress can be watched) holds a real wheel."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, expect

from tests.conftest import StartServer
from tests.executor.conftest import remove_kernels
from tests.support.package_index import PackageIndex, build_wheel
from tests.web.conftest import WebWeft, _web_server
from tests.web.ui import cell, click_end

pytestmark = [pytest.mark.anyio, pytest.mark.browser, pytest.mark.docker, pytest.mark.timeout(300)]

ADA = ("Ada Lovelace", "#e5484d")
GRACE = ("Grace Hopper", "#0090ff")


@pytest.fixture
def index(tmp_path: Path) -> Iterator[PackageIndex]:
    folder = tmp_path / "index"
    build_wheel(folder, "weftdemo", "2.0", files={"weftdemo/__init__.py": "VERSION = '2.0'\n"})
    with PackageIndex(folder, file_delay_s=1.0) as served:
        yield served


@pytest.fixture
async def web_env(
    docker_engine: Any,
    start_server: StartServer,
    web_dist: Path,
    browser: Browser,
    index: PackageIndex,
) -> AsyncIterator[WebWeft]:
    instance = f"weft-web-{uuid.uuid4().hex[:8]}"
    server = await _web_server(
        start_server,
        web_dist,
        instance,
        WEFT_PACKAGE_INDEX_URL=index.url,
        WEFT_CELL_TIMEOUT_SECONDS="120",  # importing plotly takes seconds on a busy machine
    )
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=server.auth) as api:
            weft = WebWeft(server, api, browser)
            yield weft
        assert not weft.page_errors, weft.page_errors
        assert not weft.csp_violations, weft.csp_violations
    finally:
        server.stop()
        remove_kernels(docker_engine, instance)


async def test_an_editor_adds_a_dependency_and_everyone_sees_it_prepared(
    web_env: WebWeft,
) -> None:
    web = web_env
    notebook = await web.notebook(
        [
            {"source": "import weftdemo\nprint('demo', weftdemo.VERSION)"},
            {"source": "import plotly.express as px\npx.bar(x=['a', 'b'], y=[1, 3]).show()"},
        ],
        title="Deps",
    )
    ada = await web.open_notebook(await web.person(*ADA), notebook)
    grace = await web.open_notebook(await web.person(*GRACE, role="viewer"), notebook)
    for page in (ada, grace):
        await page.get_by_role("tab", name="Configuration").click()
        await expect(page.locator(".config-panel")).to_contain_text("No dependencies")
    await expect(grace.locator(".dep-add")).to_have_count(0)  # read-only for viewers

    await ada.get_by_label("Add a dependency").fill("weftdemo")
    await ada.get_by_role("button", name="Add", exact=True).click()
    for page in (ada, grace):
        await expect(page.locator('.dep[data-requirement="weftdemo"]')).to_be_visible()
    # The preparation is live for both: the step, then which package and how far.
    await expect(grace.locator(".top-kernel .kernel-light")).to_have_attribute(
        "data-state", "preparing"
    )
    await expect(ada.locator(".env-progress")).to_contain_text(
        re.compile(r"Resolving|Downloading weftdemo 2\.0 \(1 of 1\)")
    )
    await expect(grace.locator(".env-progress")).to_contain_text("Downloading weftdemo 2.0")
    for page in (ada, grace):
        await expect(page.locator(".env-ready")).to_contain_text("Ready: 1 package", timeout=60_000)
        await expect(page.locator('.dep[data-requirement="weftdemo"] .dep-resolved')).to_have_text(
            "2.0"
        )
    await expect(grace.locator(".dep-remove")).to_have_count(0)

    await click_end(ada, "c0")
    await ada.keyboard.press("Shift+Enter")
    for page in (ada, grace):
        await expect(cell(page, "c0").locator(".output-stream")).to_have_text(
            "demo 2.0\n", timeout=60_000
        )

    # The richer default runtime: a plotly figure is drawn (in its sandboxed frame) for both.
    await ada.keyboard.press("Shift+Enter")
    for page in (ada, grace):
        chart = cell(page, "c1").frame_locator("iframe.output-plotly")
        await expect(chart.locator(".main-svg").first).to_be_visible(timeout=60_000)

    # Pinning writes the resolved version; a bad requirement says what is wrong, for both.
    await ada.locator('.dep[data-requirement="weftdemo"] .dep-pin').click()
    await expect(grace.locator('.dep[data-requirement="weftdemo==2.0"]')).to_be_visible()
    await ada.get_by_label("Add a dependency").fill("nosuchpackage")
    await ada.keyboard.press("Enter")
    for page in (ada, grace):
        await expect(page.locator(".env-error")).to_contain_text(
            "there is no package named 'nosuchpackage'", timeout=60_000
        )
    await ada.locator('.dep[data-requirement="nosuchpackage"] .dep-remove').click()
    await expect(grace.locator(".env-ready")).to_be_visible(timeout=60_000)


async def test_an_owner_switches_kernel_network_and_others_see_it(web: WebWeft) -> None:
    workspace = await web.workspace("Network")
    olive = await web.page(
        await web.person("Olive Owner", "#30a46c", role="owner"),
        f"/workspaces/{workspace}?tab=members",
    )
    ed = await web.page(
        await web.person("Ed Editor", "#e5484d", role="editor"),
        f"/workspaces/{workspace}?tab=members",
    )
    switch = olive.get_by_label("Kernels may reach the network")
    await expect(switch).to_be_enabled()
    await expect(switch).not_to_be_checked()
    await switch.check()
    await expect(olive.locator(".kernel-network-note")).to_contain_text("open connections")
    response = await web.api.get(f"/api/workspaces/{workspace}/executor")
    assert response.json() == {"network": True}
    await ed.reload()
    their = ed.get_by_label("Kernels may reach the network")
    await expect(their).to_be_checked()
    await expect(their).to_be_disabled()
    await expect(ed.locator(".kernel-network-note")).to_contain_text("Only an owner can change")
    await switch.uncheck()
    await expect(olive.locator(".kernel-network-note")).to_contain_text("run without network")
    response = await web.api.get(f"/api/workspaces/{workspace}/executor")
    assert response.json() == {"network": False}
