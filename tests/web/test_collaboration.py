"""Two people in one notebook, each in their own browser context: they type in the same cell
and see each other's text and named cursor; markdown renders LaTeX; cells are added, moved,
retyped and deleted for both; undo only undoes one's own edits; an edit made offline reaches
the other person when the network comes back."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from collab.sync.room import PALETTE
from tests.web.conftest import WebWeft, artifact
from tests.web.ui import CELL_TEXT, cell, cell_text, click_end, editor, insert, wait_text

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

ADA = ("Ada Lovelace", "#e5484d")
GRACE = ("Grace Hopper", "#0090ff")


async def test_two_people_type_in_one_cell_and_see_each_others_cursor(web: WebWeft) -> None:
    notebook = await web.notebook(
        [
            {"cell_type": "code", "source": ""},
            {
                "cell_type": "markdown",
                "source": "## Growth\nRevenue grows as $R(t) = R_0 e^{gt}$, and\n"
                "$$\\sum_{i=1}^{n} x_i^2 = \\frac{n(n+1)(2n+1)}{6}$$",
            },
        ],
        title="Shared analysis",
    )
    ada = await web.open_notebook(await web.person(*ADA), notebook)
    grace = await web.open_notebook(await web.person(*GRACE), notebook)

    # Each sees the other in the notebook.
    await expect(ada.locator(".people .avatar")).to_have_attribute("title", "Grace Hopper")
    await expect(grace.locator(".people .avatar")).to_have_attribute("title", "Ada Lovelace")

    await editor(ada, "c0").click()
    await ada.keyboard.type("total = 40")
    await wait_text(grace, "c0", "total = 40")
    await click_end(grace, "c0")
    await grace.keyboard.type(" + 2")
    await wait_text(ada, "c0", "total = 40 + 2")

    # Each sees the other's caret in the cell, in their colour, with their name.
    grace_caret = cell(ada, "c0").locator(".cm-ySelectionInfo", has_text="Grace Hopper")
    ada_caret = cell(grace, "c0").locator(".cm-ySelectionInfo", has_text="Ada Lovelace")
    await expect(grace_caret).to_be_visible()
    colour = "e => getComputedStyle(e).backgroundColor"
    colours = [await grace_caret.evaluate(colour)]
    await click_end(ada, "c0")
    await expect(ada_caret).to_be_visible()
    colours.append(await ada_caret.evaluate(colour))
    # The colours are the server's (its palette, one per person), not what a browser claims.
    palette = {
        "rgb({}, {}, {})".format(*(int(c[i : i + 2], 16) for i in (1, 3, 5))) for c in PALETTE
    }
    assert set(colours) <= palette, colours
    assert colours[0] != colours[1]
    # ... and knows which cell the other is in.
    await expect(cell(grace, "c0").locator(".cell-presence .avatar")).to_have_attribute(
        "title", "Ada Lovelace is here"
    )

    # The markdown cell is rendered, with LaTeX, for both.
    for page in (ada, grace):
        rendered = cell(page, "c1").locator(".markdown-rendered")
        await expect(rendered.locator("h2")).to_have_text("Growth")
        await expect(rendered.locator(".katex")).to_have_count(2)
        await expect(rendered.locator(".math-display .katex-display")).to_have_count(1)

    # Ada edits the markdown (double-click opens the editor); Grace's rendering follows.
    await cell(ada, "c1").locator(".markdown-rendered").dblclick()
    await expect(cell(ada, "c1").locator(".cm-content")).to_be_visible()
    await ada.keyboard.press("Control+End")
    await ada.keyboard.insert_text("\n\nwith $\\alpha = 0.05$.")
    await expect(cell(grace, "c1").locator(".markdown-rendered .katex")).to_have_count(3)
    await ada.keyboard.press("Shift+Enter")  # renders it again and moves on
    await expect(cell(ada, "c1").locator(".markdown-rendered .katex")).to_have_count(3)

    await editor(ada, "c0").click()
    await editor(grace, "c0").click()
    await ada.screenshot(path=artifact("collaboration-ada.png"))
    await grace.screenshot(path=artifact("collaboration-grace.png"))

    # Undo undoes only one's own edits: Ada's undo removes her text, not Grace's.
    await click_end(ada, "c0")
    await ada.keyboard.press("Control+z")
    await wait_text(ada, "c0", " + 2")
    await wait_text(grace, "c0", " + 2")
    await ada.keyboard.press("Control+Shift+Z")
    await wait_text(grace, "c0", "total = 40 + 2")


async def test_cells_are_added_moved_retyped_and_deleted_for_everyone(web: WebWeft) -> None:
    notebook = await web.notebook(
        [{"cell_type": "code", "source": "a = 1"}, {"cell_type": "code", "source": "b = 2"}]
    )
    ada = await web.open_notebook(await web.person(*ADA), notebook)
    grace = await web.open_notebook(await web.person(*GRACE), notebook)

    # Add a markdown cell below the first one.
    await cell(ada, "c0").click()
    bar = ada.locator(".cell + .add-bar").first
    await bar.hover()
    await bar.get_by_role("button", name="Markdown").click()
    await ada.keyboard.insert_text("# Notes")
    cells = grace.locator(".cells > .cell")
    await expect(cells).to_have_count(3)
    await expect(cells.nth(1)).to_have_attribute("data-type", "markdown")
    new_id = await cells.nth(1).get_attribute("data-cell-id")
    assert new_id
    await expect(cell(grace, new_id).locator(".markdown-rendered h1")).to_have_text("Notes")

    # Move it to the top.
    await cell(ada, new_id).get_by_role("button", name="Move up").click()
    first = grace.locator(".cells > .cell").first
    await expect(first).to_have_attribute("data-cell-id", new_id)
    await expect(first.locator(".markdown-rendered h1")).to_have_text("Notes")

    # Turn the second code cell into SQL, then into markdown.
    await cell(ada, "c1").locator("select.cell-lang").select_option("sql")
    await expect(cell(grace, "c1").locator("select.cell-lang")).to_have_value("sql")
    await cell(ada, "c1").locator("select.cell-type").select_option("markdown")
    await expect(cell(grace, "c1")).to_have_attribute("data-type", "markdown")

    # Delete the first code cell.
    await cell(ada, "c0").click()
    await cell(ada, "c0").get_by_role("button", name="Delete cell").click()
    await expect(cell(grace, "c0")).to_have_count(0)
    assert [await c.get_attribute("data-cell-id") for c in await cells.all()] == [new_id, "c1"]

    # ... and bring it back from the toast, where it was, with its text.
    await ada.locator(".toast").get_by_role("button", name="Undo").click()
    await expect(cell(grace, "c0")).to_have_count(1)
    assert [await c.get_attribute("data-cell-id") for c in await cells.all()] == [
        new_id,
        "c0",
        "c1",
    ]
    await wait_text(grace, "c0", "a = 1")


async def test_an_edit_made_offline_reaches_the_other_person_when_back_online(
    web: WebWeft,
) -> None:
    notebook = await web.notebook([{"cell_type": "code", "source": "a = 1"}])
    ada_context = await web.person(*ADA)
    grace_context = await web.person(*GRACE)
    ada = await web.open_notebook(ada_context, notebook)
    grace = await web.open_notebook(grace_context, notebook)

    await grace_context.set_offline(True)
    await expect(grace.locator(".conn-badge")).to_have_attribute("data-state", "offline")
    await expect(grace.locator(".banner-offline")).to_contain_text("You are offline")
    await insert(grace, "c0", "\nb = 2  # written offline")
    await insert(ada, "c0", "\nc = 3  # written meanwhile")
    await ada.wait_for_timeout(1000)
    assert await cell_text(ada, "c0") == "a = 1\nc = 3  # written meanwhile"
    await grace.screenshot(path=artifact("offline-grace.png"))

    await grace_context.set_offline(False)
    await expect(grace.locator(".conn-badge")).to_have_attribute("data-state", "online")
    await expect(grace.locator(".banner-offline")).to_have_count(0)
    await grace.wait_for_function(
        f"() => ({CELL_TEXT})('c0').split('\\n').length === 3", timeout=15_000
    )
    merged = await cell_text(grace, "c0")
    assert merged is not None
    assert sorted(merged.split("\n")) == sorted(
        ["a = 1", "b = 2  # written offline", "c = 3  # written meanwhile"]
    )
    await wait_text(ada, "c0", merged)
