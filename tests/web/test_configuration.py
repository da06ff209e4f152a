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
from pycrdt import Map

from tests.conftest import StartServer, token_of
from tests.executor.conftest import remove_kernels, second_runtime_image
from tests.support.package_index import PackageIndex, build_wheel
from tests.support.pyclient import py_client
from tests.web.conftest import WebWeft, _web_server, artifact, kernel_web
from tests.web.ui import cell, click_end

pytestmark = [pytest.mark.anyio, pytest.mark.browser, pytest.mark.docker, pytest.mark.timeout(300)]

ADA = ("Ada Lovelace", "#e5484d")
GRACE = ("Grace Hopper", "#0090ff")
VIC = ("Vic Viewer", "#30a46c")

__all__ = ["second_runtime_image"]  # a fixture


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


@pytest.fixture
def quick_index(tmp_path: Path) -> Iterator[PackageIndex]:
    folder = tmp_path / "quick-index"
    build_wheel(folder, "weftdemo", "2.0", files={"weftdemo/__init__.py": "VERSION = '2.0'\n"})
    build_wheel(folder, "weftextra", "1.0", files={"weftextra/__init__.py": "VERSION = '1.0'\n"})
    with PackageIndex(folder) as served:
        yield served


@pytest.fixture
async def web_runtimes(
    docker_engine: Any,
    start_server: StartServer,
    web_dist: Path,
    browser: Browser,
    quick_index: PackageIndex,
    second_runtime_image: str,
) -> AsyncIterator[WebWeft]:
    async with kernel_web(
        docker_engine,
        start_server,
        web_dist,
        browser,
        WEFT_KERNEL_IMAGES=f"second={second_runtime_image}",
        WEFT_PACKAGE_INDEX_URL=quick_index.url,
    ) as weft:
        yield weft


async def test_an_editor_chooses_the_runtime_and_two_editors_add_packages_at_once(
    web_runtimes: WebWeft, docker_engine: Any, second_runtime_image: str
) -> None:
    web = web_runtimes
    notebook = await web.notebook([{"source": "import weftdemo, weftextra\nprint('both')"}])
    ada_context = await web.person(*ADA)
    ada = await web.open_notebook(ada_context, notebook)
    grace = await web.open_notebook(await web.person(*GRACE), notebook)
    vic = await web.open_notebook(await web.person(*VIC, role="viewer"), notebook)
    for page in (ada, grace, vic):
        await page.get_by_role("tab", name="Configuration").click()
        await expect(page.get_by_label("Runtime")).to_have_value("default")
    await expect(ada.locator(".runtime-image")).to_have_text(re.compile(r"^weft-runtime:"))
    await expect(vic.get_by_label("Runtime")).to_be_disabled()  # read-only for viewers

    await ada.get_by_label("Runtime").select_option("second")
    for page in (grace, vic):
        await expect(page.get_by_label("Runtime")).to_have_value("second")
        await expect(page.locator(".runtime-image")).to_have_text(second_runtime_image)

    # Two editors add a package at the same moment (Ada's edit is made offline, so neither
    # has seen the other's): both packages stay, for everyone.
    await ada_context.set_offline(True)
    await expect(ada.locator(".conn-badge")).to_have_attribute("data-state", "offline")
    await ada.get_by_label("Add a dependency").fill("weftextra")
    await ada.keyboard.press("Enter")
    await grace.get_by_label("Add a dependency").fill("weftdemo")
    await grace.keyboard.press("Enter")
    await expect(grace.locator('.dep[data-requirement="weftdemo"]')).to_be_visible()
    await ada_context.set_offline(False)
    await expect(ada.locator(".conn-badge")).to_have_attribute("data-state", "online")
    for page in (ada, grace, vic):
        for name in ("weftdemo", "weftextra"):
            await expect(page.locator(f'.dep[data-requirement="{name}"]')).to_be_visible()

    await click_end(grace, "c0")
    await grace.keyboard.press("Shift+Enter")
    for page in (ada, vic):
        await expect(cell(page, "c0").locator(".output-stream")).to_have_text(
            "both\n", timeout=90_000
        )
    (container,) = docker_engine.containers.list(filters={"label": f"weft.notebook={notebook}"})
    assert container.attrs["Config"]["Image"] == second_runtime_image
    assert container.attrs["HostConfig"]["NetworkMode"] == "none"
    await ada.screenshot(path=artifact("configuration-runtime-ada.png"))

    # A runtime this server does not offer (written by anyone) is shown, never chosen.
    async with py_client(web.server.ws_base, notebook, token=token_of(web.api)) as client:
        client.doc.get("meta", type=Map)["metadata"]["runtime"] = "gpu-elsewhere"
        await client.flush()
        for page in (ada, vic):
            await expect(page.get_by_label("Runtime")).to_have_value("gpu-elsewhere")
            await expect(page.locator(".runtime-select option:checked")).to_have_text(
                "gpu-elsewhere (not offered here)"
            )
    await click_end(grace, "c0")
    await grace.keyboard.press("Control+Enter")
    for page in (ada, vic):
        await expect(page.locator(".env-error")).to_contain_text(
            "choose one of: default, second", timeout=60_000
        )
