"""The assistant in the notebook, in real browsers against a local OpenAI-compatible server
(tests/support/openai_server.py): asked from a cell (Ctrl-K), its code streams into the cell
for everyone through the shared document, the cell is marked "assistant writing for <name>"
for every collaborator (viewers too), and only the person who asked gets Cancel, Accept and
Reject. Failures are shown in place, under the cell, with the server's message."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.support.openai_server import Gate, error, stream
from tests.web.conftest import WebWeft, artifact
from tests.web.ui import CELL_TEXT, cell, cell_text, click_end, editor, wait_text

pytestmark = [pytest.mark.anyio, pytest.mark.browser]


async def wait_contains(page: Page, cell_id: str, part: str, timeout: float = 15_000) -> str:
    """Wait until the cell's editor shows ``part`` somewhere; the text it then shows."""
    await page.wait_for_function(
        f"([id, part]) => (({CELL_TEXT})(id) || '').includes(part)",
        arg=[cell_id, part],
        timeout=timeout,
    )
    text = await cell_text(page, cell_id)
    assert text is not None
    return text


async def ask(page: Page, cell_id: str, instruction: str) -> None:
    """Ctrl-K in the cell's editor, type the instruction, Enter."""
    await page.keyboard.press("Control+k")
    box = cell(page, cell_id).locator(".assist-box")
    await expect(box).to_be_visible()
    await box.get_by_role("textbox", name="Instruction for the assistant").fill(instruction)
    await page.keyboard.press("Enter")


async def test_generation_streams_into_the_cell_for_everyone(web_ai: WebWeft) -> None:
    assert web_ai.openai is not None
    notebook_id = await web_ai.notebook([{"source": "x = 1\n"}], title="Assisted")
    ada_context = await web_ai.person("Ada Lovelace", "#e5484d")
    grace_context = await web_ai.person("Grace Hopper", "#0090ff")
    vic_context = await web_ai.person("Vic Viewer", "#30a46c", role="viewer")
    ada = await web_ai.open_notebook(ada_context, notebook_id)
    grace = await web_ai.open_notebook(grace_context, notebook_id)
    vic = await web_ai.open_notebook(vic_context, notebook_id)
    await wait_text(grace, "c0", "x = 1\n")

    first, second = Gate(), Gate()
    web_ai.openai.script(
        stream(
            "```python\n",
            "y = x + 1\n",
            first,
            "for i in range(3):\n",
            second,
            "    print(y * i)\n",
            "```\n",
            "This prints multiples of y.",
        )
    )
    # Ada asks at the end of the cell: the toolbar has the button, Ctrl-K opens the box.
    await expect(cell(ada, "c0").locator(".tool-assist")).to_have_count(1)
    await click_end(ada, "c0")
    await ask(ada, "c0", "print multiples of x plus one")
    await expect(cell(ada, "c0").locator(".assist-box")).to_be_hidden()

    # The code streams into the cell, by itself, for all three; the cell says for whom.
    await first.reached()
    for page in (ada, grace, vic):
        seen = await wait_contains(page, "c0", "y = x + 1")
        assert "for i" not in seen, seen
        mark = cell(page, "c0").locator(".assist-mark")
        await expect(mark).to_contain_text("Assistant writing for Ada Lovelace")
        await expect(mark).to_have_attribute("data-state", "streaming")
    # Only Ada may stop it; the others (and the viewer) only see it. Nobody draws the
    # server's awareness client 0; the assistant is present in the cell while it writes.
    await expect(cell(ada, "c0").locator(".assist-cancel")).to_be_visible()
    await expect(cell(grace, "c0").locator(".assist-mark button")).to_have_count(0)
    await expect(cell(vic, "c0").locator(".assist-mark button")).to_have_count(0)
    await expect(cell(vic, "c0").locator(".tool-assist")).to_have_count(0)
    await expect(cell(grace, "c0").locator(".cell-presence .avatar-assistant")).to_have_attribute(
        "title", "Assistant (for Ada Lovelace) is writing here"
    )
    await grace.screenshot(path=artifact("assistant-streaming-grace.png"))

    first.open()
    await second.reached()
    for page in (ada, grace, vic):
        seen = await wait_contains(page, "c0", "for i in range(3):")
        assert "print(y * i)" not in seen, seen
    second.open()

    # Done: a pending suggestion. Ada keeps it or undoes it; the others see it wait for her.
    final = "x = 1\ny = x + 1\nfor i in range(3):\n    print(y * i)"
    for page in (ada, grace, vic):
        await wait_text(page, "c0", final)
    await expect(cell(ada, "c0").locator(".assist-mark")).to_have_attribute("data-state", "pending")
    await expect(cell(grace, "c0").locator(".assist-mark")).to_contain_text(
        "Assistant suggestion for Ada Lovelace"
    )
    await expect(cell(grace, "c0").locator(".assist-mark button")).to_have_count(0)
    await expect(cell(grace, "c0").locator(".avatar-assistant")).to_have_count(0)
    await ada.screenshot(path=artifact("assistant-pending-ada.png"))
    await cell(ada, "c0").get_by_role("button", name="Accept").click()
    for page in (ada, grace, vic):
        await expect(cell(page, "c0").locator(".assist-mark")).to_be_hidden()
        await expect(cell(page, "c0")).to_have_attribute("data-assist", "")
    assert await cell_text(grace, "c0") == final

    # The request carried the cursor (the end of the cell, in UTF-16 code units) and the
    # generation is accepted for good.
    body = web_ai.openai.bodies()[-1]
    prompt = body["messages"][-1]["content"]
    assert "x = 1\n<CURSOR/>" in prompt, prompt
    sources = await export_sources(web_ai.api, notebook_id)
    assert sources == [final]


async def test_replace_a_selection_cancel_then_reject(web_ai: WebWeft) -> None:
    assert web_ai.openai is not None
    original = "a = 1\nb = 2\nprint(a)\n"
    notebook_id = await web_ai.notebook([{"source": original}])
    ada = await web_ai.open_notebook(await web_ai.person("Ada Lovelace", "#e5484d"), notebook_id)
    grace = await web_ai.open_notebook(await web_ai.person("Grace Hopper", "#0090ff"), notebook_id)

    gate = Gate()
    web_ai.openai.script(stream("c = a + b\n", gate, "never = 'sent'\n"))
    # Select the second line, then open the box from the toolbar's button.
    await editor(ada, "c0").locator(".cm-line").nth(1).click()
    await ada.keyboard.press("Home")
    await ada.keyboard.press("Shift+End")
    await cell(ada, "c0").locator(".tool-assist").click()
    box = cell(ada, "c0").locator(".assist-box")
    await expect(box.locator(".assist-where")).to_have_text("Replaces the selection (5 characters)")
    await box.get_by_role("textbox").fill("sum them")
    await ada.screenshot(path=artifact("assistant-prompt-ada.png"))
    await box.get_by_role("button", name="Generate").click()

    await gate.reached()
    await wait_contains(grace, "c0", "c = a + b")
    assert "b = 2" not in (await cell_text(grace, "c0") or "")
    # Ada stops it: what came stays, pending, until she accepts or rejects it.
    await cell(ada, "c0").get_by_role("button", name="Cancel").click()
    await expect(cell(ada, "c0").locator(".assist-mark")).to_have_attribute("data-state", "pending")
    await expect(cell(ada, "c0").locator(".assist-note")).to_have_text("cancelled")
    await expect(cell(grace, "c0").locator(".assist-mark")).to_have_attribute(
        "data-state", "pending"
    )
    gate.open()
    # The controls come from the document's mark: they are there again after a reload.
    await ada.reload()
    await expect(ada.locator(".conn-badge")).to_have_attribute("data-state", "online")
    await expect(cell(ada, "c0").get_by_role("button", name="Accept")).to_be_visible()
    await cell(ada, "c0").get_by_role("button", name="Reject").click()
    for page in (ada, grace):
        await wait_text(page, "c0", original)
        await expect(cell(page, "c0").locator(".assist-mark")).to_be_hidden()
    prompt = web_ai.openai.bodies()[-1]["messages"][-1]["content"]
    assert "a = 1\n<SELECTION>b = 2</SELECTION>\nprint(a)" in prompt, prompt


async def test_failures_are_shown_under_the_cell(web_ai: WebWeft) -> None:
    assert web_ai.openai is not None
    notebook_id = await web_ai.notebook([{"source": "x = 1\n"}])
    ada = await web_ai.open_notebook(await web_ai.person("Ada Lovelace", "#e5484d"), notebook_id)
    await web_ai.person("Grace Hopper", "#0090ff")

    # The provider refuses (rate limited): the partial code goes, the reason shows in place.
    web_ai.openai.script(error(429))
    await click_end(ada, "c0")
    await ask(ada, "c0", "add two")
    message = cell(ada, "c0").locator(".assist-message")
    await expect(message).to_have_attribute("role", "alert")
    await expect(message).to_contain_text("rate limiting")
    await expect(message).to_contain_text("Rate limit reached for requests")
    await wait_text(ada, "c0", "x = 1\n")
    await expect(cell(ada, "c0").locator(".assist-mark")).to_be_hidden()

    # Someone else's generation still streaming in the cell: the server's 409, in place.
    gate = Gate()
    web_ai.openai.script(stream("y = 2\n", gate, "z = 3\n"))
    grace_api = httpx.AsyncClient(
        base_url=web_ai.url,
        timeout=30,
        headers={"Authorization": f"Bearer {web_ai.accounts['Grace Hopper'].token}"},
    )
    async with grace_api:
        response = await grace_api.post(
            f"/api/notebooks/{notebook_id}/cells/c0/assist", json={"instruction": "more"}
        )
        assert response.status_code == 202, response.text
        await gate.reached()
        await expect(cell(ada, "c0").locator(".assist-mark")).to_contain_text(
            "Assistant writing for Grace Hopper"
        )
        await click_end(ada, "c0")
        await ask(ada, "c0", "something else")
        await expect(message).to_contain_text("This cell is busy")
        await expect(cell(ada, "c0").locator(".assist-box")).to_be_visible()
        gate.open()
        await expect(cell(ada, "c0").locator(".assist-mark")).to_contain_text(
            "Assistant suggestion for Grace Hopper"
        )
    await ada.screenshot(path=artifact("assistant-busy-ada.png"))


@pytest.mark.docker
async def test_fix_a_cell_whose_run_failed(web_kernel_ai: WebWeft) -> None:
    assert web_kernel_ai.openai is not None
    notebook_id = await web_kernel_ai.notebook([{"source": "total = sum([1, 2, 3)"}])
    ada = await web_kernel_ai.open_notebook(
        await web_kernel_ai.person("Ada Lovelace", "#e5484d"), notebook_id
    )
    # No error yet: the prompt box offers no Fix.
    await click_end(ada, "c0")
    await ada.keyboard.press("Control+k")
    await expect(cell(ada, "c0").locator(".assist-box")).to_be_visible()
    await expect(cell(ada, "c0").locator(".assist-fix")).to_be_hidden()
    await ada.keyboard.press("Escape")
    await expect(cell(ada, "c0").locator(".assist-box")).to_be_hidden()

    await cell(ada, "c0").locator(".tool-run").click()
    await expect(cell(ada, "c0")).to_have_attribute("data-state", "error", timeout=60_000)
    web_kernel_ai.openai.script(stream("```python\n", "total = sum([1, 2, 3])\n", "```"))
    await cell(ada, "c0").get_by_role("button", name="Fix", exact=True).click()
    await wait_text(ada, "c0", "total = sum([1, 2, 3])")
    await expect(cell(ada, "c0").locator(".assist-mark")).to_have_attribute("data-state", "pending")
    # The model was told about the error.
    prompt = web_kernel_ai.openai.bodies()[-1]["messages"][-1]["content"]
    assert "SyntaxError" in prompt, prompt
    await cell(ada, "c0").get_by_role("button", name="Accept").click()
    await expect(cell(ada, "c0").locator(".assist-mark")).to_be_hidden()
    await cell(ada, "c0").locator(".tool-run").click()
    await expect(cell(ada, "c0")).to_have_attribute("data-state", "done", timeout=60_000)


async def test_without_a_provider_the_server_says_how_to_configure_it(web: WebWeft) -> None:
    notebook_id = await web.notebook([{"source": "x = 1\n"}])
    ada = await web.open_notebook(await web.person("Ada Lovelace", "#e5484d"), notebook_id)
    await click_end(ada, "c0")
    await ask(ada, "c0", "add two")
    message = cell(ada, "c0").locator(".assist-message")
    await expect(message).to_contain_text("The assistant is not available")
    await expect(message).to_contain_text("OPENAI_API_KEY")


async def export_sources(api: httpx.AsyncClient, notebook_id: str) -> list[str]:
    exported = (await api.get(f"/api/notebooks/{notebook_id}/export")).json()
    return [
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in exported["cells"]
    ]
