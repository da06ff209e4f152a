"""Reading and driving the notebook page as a person would: cells by id, their editors' text
(what is shown, without other people's caret labels), typing, waiting."""

from __future__ import annotations

from playwright.async_api import Locator, Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

# The text a cell's editor shows, line by line, minus widgets (remote carets with their name
# labels, placeholders) that are not part of the document.
CELL_TEXT = """(id) => {
  const el = document.querySelector(`.cell[data-cell-id="${id}"] .cm-content`)
  if (!el) return null
  const copy = el.cloneNode(true)
  copy.querySelectorAll('.cm-ySelectionCaret, .cm-widgetBuffer, .cm-placeholder')
    .forEach((n) => n.remove())
  return [...copy.querySelectorAll('.cm-line')]
    .map((l) => l.textContent.replace(/\\u2060/g, '')).join('\\n')
}"""


def cell(page: Page, cell_id: str) -> Locator:
    return page.locator(f'.cell[data-cell-id="{cell_id}"]')


def editor(page: Page, cell_id: str) -> Locator:
    return cell(page, cell_id).locator(".cm-content")


async def cell_text(page: Page, cell_id: str) -> str | None:
    text: str | None = await page.evaluate(CELL_TEXT, cell_id)
    return text


async def wait_text(page: Page, cell_id: str, want: str, timeout: float = 15_000) -> None:
    """Wait until the cell's editor shows exactly ``want``."""
    try:
        await page.wait_for_function(
            f"([id, want]) => ({CELL_TEXT})(id) === want", arg=[cell_id, want], timeout=timeout
        )
    except PlaywrightTimeout:
        raise AssertionError(
            f"cell {cell_id} shows {await cell_text(page, cell_id)!r}, expected {want!r}"
        ) from None


async def click_end(page: Page, cell_id: str) -> None:
    """Put the caret at the end of the cell's text."""
    await editor(page, cell_id).click()
    await page.keyboard.press("Control+End")


async def insert(page: Page, cell_id: str, text: str) -> None:
    """Insert text at the end of a cell as one input (no autocompletion, no auto-indent)."""
    await click_end(page, cell_id)
    await page.keyboard.insert_text(text)
