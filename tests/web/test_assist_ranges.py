"""The assistant's characters, exactly, in another person's browser: the document's mark
names them (Yjs relative positions) and each editor marks those characters, not the whole
cell, while that person types before, right at the edge of and inside the suggestion, with
4-byte characters (emoji) around."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.support.openai_server import Gate, stream
from tests.web.conftest import WebWeft, artifact
from tests.web.test_assistant import ask, wait_contains
from tests.web.ui import cell, click_end, editor

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

# The cell's text as its editor shows it, with the characters marked as the assistant's
# (`.cm-assist-text`) in [brackets]; remote carets and other widgets left out.
MARKED = """(id) => {
  const root = document.querySelector(`.cell[data-cell-id="${id}"] .cm-content`)
  if (!root) return null
  const skip = '.cm-ySelectionCaret, .cm-widgetBuffer, .cm-placeholder'
  return [...root.querySelectorAll('.cm-line')].map((line) => {
    let out = ''
    let open = false
    const walker = document.createTreeWalker(line, NodeFilter.SHOW_TEXT)
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (node.parentElement.closest(skip)) continue
      const text = node.textContent.replace(/\\u2060/g, '')
      if (!text) continue
      const marked = !!node.parentElement.closest('.cm-assist-text')
      if (marked !== open) { out += marked ? '[' : ']'; open = marked }
      out += text
    }
    return out + (open ? ']' : '')
  }).join('\\n')
}"""


async def marked(page: Page, cell_id: str) -> str | None:
    text: str | None = await page.evaluate(MARKED, cell_id)
    return text


async def wait_marked(page: Page, cell_id: str, want: str, timeout: float = 4_000) -> None:
    try:
        await page.wait_for_function(
            f"([id, want]) => ({MARKED})(id) === want", arg=[cell_id, want], timeout=timeout
        )
    except Exception:
        raise AssertionError(
            f"the cell shows {await marked(page, cell_id)!r}, not {want!r}"
        ) from None


async def test_another_persons_editor_marks_exactly_the_assistants_characters(
    web_ai: WebWeft,
) -> None:
    assert web_ai.openai is not None
    notebook_id = await web_ai.notebook([{"source": "a = '😀'\n"}])
    ada = await web_ai.open_notebook(await web_ai.person("Ada Lovelace", "#e5484d"), notebook_id)
    grace = await web_ai.open_notebook(await web_ai.person("Grace Hopper", "#0090ff"), notebook_id)
    first, second = Gate(), Gate()
    web_ai.openai.script(stream("b = '🐍'\n", first, "c = b + '🦀'\n", second, "print(c)"))
    await click_end(ada, "c0")
    await ask(ada, "c0", "two more lines")

    await first.reached()
    # While it streams: Grace's editor marks the code so far, not the line above it, and
    # the cell itself is not outlined (the characters are).
    await wait_marked(grace, "c0", "a = '😀'\n[b = '🐍']")
    await expect(cell(grace, "c0")).to_have_attribute("data-assist-exact", "")
    # Grace types right before the suggestion (at its edge), then inside it.
    await editor(grace, "c0").locator(".cm-line").nth(1).click()
    await grace.keyboard.press("Home")
    await grace.keyboard.insert_text("🙂 ")
    for _ in range(4):
        await grace.keyboard.press("ArrowRight")
    await grace.keyboard.insert_text("👋")
    await wait_marked(grace, "c0", "a = '😀'\n🙂 [b = ]👋['🐍']")
    first.open()
    await second.reached()
    await wait_contains(grace, "c0", "c = b + '🦀'")
    second.open()

    # Pending: exactly the assistant's characters, in both editors.
    final = "a = '😀'\n🙂 [b = ]👋['🐍']\n[c = b + '🦀']\n[print(c)]"
    await expect(cell(ada, "c0").locator(".assist-mark")).to_have_attribute("data-state", "pending")
    await wait_marked(grace, "c0", final)
    await wait_marked(ada, "c0", final)
    title = await cell(grace, "c0").locator(".cm-assist-text").first.get_attribute("title")
    assert title == "Suggested by the assistant for Ada Lovelace"
    await grace.screenshot(path=artifact("assistant-ranges-grace.png"))
    # Grace types after the end and inside the pending suggestion: outside, and a split.
    await click_end(grace, "c0")
    await grace.keyboard.insert_text("  # ✅")
    await grace.keyboard.press("Home")
    await grace.keyboard.press("ArrowRight")
    await grace.keyboard.insert_text("🐛")
    await wait_marked(
        grace, "c0", "a = '😀'\n🙂 [b = ]👋['🐍']\n[c = b + '🦀']\n[p]🐛[rint(c)]  # ✅"
    )

    # Accepted: plain text again, marked nowhere.
    await cell(ada, "c0").get_by_role("button", name="Accept").click()
    plain = "a = '😀'\n🙂 b = 👋'🐍'\nc = b + '🦀'\np🐛rint(c)  # ✅"
    for page in (ada, grace):
        await expect(cell(page, "c0").locator(".assist-mark")).to_be_hidden()
        await wait_marked(page, "c0", plain)
        await expect(cell(page, "c0").locator(".cm-assist-text")).to_have_count(0)
