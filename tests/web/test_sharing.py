"""Accounts and sharing in the browser: signing up and in through the pages lands on the
page that needed it; a viewer share link opened signed out makes a guest who sees every
edit live but cannot type; the share dialog makes a link another person opens and joins
with, and revokes it; the workspace's members list."""

from __future__ import annotations

import json
import re

import pytest
from playwright.async_api import Page, expect

from tests.conftest import PASSWORD
from tests.web.conftest import WebWeft, artifact
from tests.web.ui import cell, cell_text, editor, insert, wait_text

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

ADA = ("Ada Lovelace", "#e5484d")
GRACE = ("Grace Hopper", "#0090ff")


async def fill_form(page: Page, fields: dict[str, str], submit: str) -> None:
    for label, value in fields.items():
        await page.get_by_label(label, exact=True).fill(value)
    await page.get_by_role("button", name=submit, exact=True).click()


async def test_sign_up_and_sign_in_land_on_the_deep_link(web: WebWeft) -> None:
    workspace = await web.workspace("Forecasts")
    notebook = await web.notebook(
        [{"cell_type": "code", "source": "x = 1"}], title="Q3", workspace_id=workspace
    )
    # The owner invites an address that has no account yet: it joins on sign-up.
    email = web.email_for("Katherine Johnson")
    await web.add_member(workspace, email, "editor")

    context = await web.person("nobody", "#30a46c", signed_in=False)
    page = await web.page(context, f"/notebooks/{notebook}")
    await page.wait_for_url(re.compile(r"/signin\?next=%2Fnotebooks%2F"))
    await expect(page.locator("h1")).to_have_text("Sign in")

    # Sign up from the sign-in page, and land on the notebook that needed it.
    await page.get_by_role("link", name="Create one").click()
    await page.wait_for_url(re.compile(r"/signup\?next="))
    await fill_form(
        page,
        {"Name": "Katherine Johnson", "Email": email, "Password": PASSWORD},
        "Create account",
    )
    await page.wait_for_url(f"**/notebooks/{notebook}")
    await expect(page.locator(".conn-badge")).to_have_attribute("data-state", "online")
    await expect(page.locator(".me-name")).to_have_text("Katherine Johnson")
    await expect(page.locator(".view-only-badge")).to_have_count(0)
    await wait_text(page, "c0", "x = 1")

    # Sign out from the top bar: the session is gone, pages ask to sign in again.
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/signin")
    me = await context.request.get("/api/auth/me")
    assert me.status == 401

    await page.goto(f"/workspaces/{workspace}")
    await page.wait_for_url(re.compile(r"/signin\?next=%2Fworkspaces%2F"))
    await fill_form(page, {"Email": email, "Password": "not the password"}, "Sign in")
    await expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    await fill_form(page, {"Email": email, "Password": PASSWORD}, "Sign in")
    await page.wait_for_url(f"**/workspaces/{workspace}")
    await expect(page.locator("h1")).to_have_text("Forecasts")
    await expect(page.locator(".nb-row")).to_have_count(1)
    await page.screenshot(path=artifact("signed-in-workspace.png"))


async def test_a_guest_with_a_viewer_link_sees_edits_live_and_cannot_type(web: WebWeft) -> None:
    workspace = await web.workspace("Shared")
    notebook = await web.notebook(
        [{"cell_type": "code", "source": "a = 1"}, {"cell_type": "code", "source": ""}],
        title="Live report",
        workspace_id=workspace,
    )
    ada = await web.open_notebook(await web.person(*ADA), notebook)
    grace = await web.open_notebook(await web.person(*GRACE), notebook)
    link = await web.api.post(
        f"/api/workspaces/{workspace}/links", json={"role": "viewer", "notebook_id": notebook}
    )
    assert link.status_code == 201, link.text

    # Signed out, the link's page says what it gives and offers to continue as a guest.
    guest = await web.person("guest", "#8e4ec6", signed_in=False)
    viewer = await web.page(guest, link.json()["url"])
    await expect(viewer.locator(".link-what")).to_contain_text("Live report")
    await expect(viewer.locator(".role-tag")).to_have_text("View only")
    await fill_form(viewer, {"Your name": "Vera Viewer"}, "Continue as guest")
    await viewer.wait_for_url(f"**/notebooks/{notebook}")
    await expect(viewer.locator(".conn-badge")).to_have_attribute("data-state", "online")
    await expect(viewer.locator(".view-only-badge")).to_have_text("View only")
    await expect(viewer.locator(".me-name")).to_have_text("Vera Viewer")
    await expect(viewer.locator(".tag-guest")).to_be_visible()
    await wait_text(viewer, "c0", "a = 1")
    # The two people are shown; the server's notice (awareness client 0) is not a person.
    await expect(viewer.locator(".people .avatar")).to_have_count(2)
    # Editing controls are not offered.
    await expect(editor(viewer, "c0")).to_have_attribute("contenteditable", "false")
    await expect(viewer.get_by_role("button", name="Run all")).to_have_count(0)
    await expect(cell(viewer, "c0").get_by_role("button", name="Delete cell")).to_have_count(0)
    await expect(viewer.locator(".share-btn")).to_have_count(0)
    # The workspace's files are for its members and the notebook's editors: said, not an error.
    await viewer.get_by_role("tab", name="Files").click()
    await expect(viewer.get_by_test_id("files-not-shared")).to_be_visible()
    await expect(viewer.locator(".files-empty.error")).to_have_count(0)

    # Others' edits arrive live.
    await insert(ada, "c0", "\nb = 2")
    await wait_text(viewer, "c0", "a = 1\nb = 2")
    await insert(grace, "c1", "print(a + b)")
    await wait_text(viewer, "c1", "print(a + b)")

    # Typing changes nothing, for the viewer or anyone else.
    await editor(viewer, "c1").click()
    await viewer.keyboard.type("import os")
    await viewer.keyboard.press("Enter")
    await viewer.wait_for_timeout(500)
    assert await cell_text(viewer, "c1") == "print(a + b)"
    assert await cell_text(ada, "c1") == "print(a + b)"
    await viewer.screenshot(path=artifact("viewer-guest.png"))


async def test_the_share_dialog_makes_a_link_another_person_joins_with(web: WebWeft) -> None:
    workspace = await web.workspace("Team")
    notebook = await web.notebook(
        [{"cell_type": "code", "source": ""}], title="Plan", workspace_id=workspace
    )
    ada = await web.open_notebook(await web.person(*ADA), notebook)

    await ada.locator(".share-btn").click()
    dialog = ada.get_by_role("dialog", name="Share this notebook")
    await dialog.get_by_label("Link role").select_option("editor")
    await dialog.get_by_label("Link expiry").select_option(label="1 day")
    await dialog.get_by_role("button", name="Create link").click()
    url = await dialog.get_by_label("Share link URL").input_value()
    assert re.search(r"/links/[\w-]+$", url), url
    rows = dialog.locator(".share-row")
    await expect(rows).to_have_count(1)
    await expect(rows).to_contain_text("Can edit")
    await expect(rows).to_contain_text("expires")
    await ada.screenshot(path=artifact("share-dialog.png"))
    await dialog.get_by_role("button", name="Close").click()

    # Someone with an account who is not a member opens the URL and joins.
    grace_context = await web.person(*GRACE, share=False)
    grace = await web.page(grace_context, url)
    await expect(grace.locator(".role-tag")).to_have_text("Can edit")
    await grace.get_by_role("button", name="Open as Grace Hopper").click()
    await grace.wait_for_url(f"**/notebooks/{notebook}")
    await expect(grace.locator(".conn-badge")).to_have_attribute("data-state", "online")
    await expect(grace.locator(".view-only-badge")).to_have_count(0)
    await insert(grace, "c0", "plan = 'ship'")
    await wait_text(ada, "c0", "plan = 'ship'")
    await expect(ada.locator(".people .avatar")).to_have_attribute("title", "Grace Hopper")

    # Revoked, the link no longer opens.
    await ada.locator(".share-btn").click()
    dialog = ada.get_by_role("dialog", name="Share this notebook")
    await dialog.locator(".share-row").get_by_role("button", name="Revoke link").click()
    await (
        ada.get_by_role("dialog", name="Revoke this link?")
        .get_by_role("button", name="Revoke link")
        .click()
    )
    await expect(dialog.locator(".share-row")).to_have_count(0)
    late = await web.page(await web.person("late", "#d6409f", signed_in=False), url)
    await expect(late.locator("h1")).to_have_text("This link does not work")


async def test_the_owner_manages_members(web: WebWeft) -> None:
    owner_context = await web.person("Olga Owner", "#3e63dd", role="owner")
    await web.person(*GRACE)
    workspace = await web.workspace("People")
    page = await web.page(owner_context, f"/workspaces/{workspace}?tab=members")
    rows = page.locator(".member-row")
    # The test's owner, Olga and Grace.
    await expect(rows).to_have_count(3)
    grace_row = rows.filter(has_text="Grace Hopper")
    await grace_row.get_by_label("Role of Grace Hopper").select_option("viewer")
    await expect(page.locator(".toast")).to_contain_text("Grace Hopper is now a viewer")
    members = (await web.api.get(f"/api/workspaces/{workspace}/members")).json()["members"]
    assert {m["name"]: m["role"] for m in members}["Grace Hopper"] == "viewer"

    await page.get_by_label("Email to invite").fill("newcomer@example.org")
    await page.get_by_role("button", name="Invite").click()
    await expect(rows.filter(has_text="newcomer@example.org")).to_contain_text("invited")

    await grace_row.get_by_role("button", name="Remove Grace Hopper").click()
    await page.get_by_role("dialog").get_by_role("button", name="Remove").click()
    await expect(rows.filter(has_text="Grace Hopper")).to_have_count(0)


async def test_a_lowered_role_makes_the_open_notebook_read_only(web: WebWeft) -> None:
    workspace = await web.workspace("Roles")
    notebook = await web.notebook(
        [{"cell_type": "code", "source": "v = 1"}], title="Roles", workspace_id=workspace
    )
    grace = await web.open_notebook(await web.person(*GRACE), notebook)
    await expect(editor(grace, "c0")).to_have_attribute("contenteditable", "true")
    await expect(grace.locator(".view-only-badge")).to_have_count(0)

    members = (await web.api.get(f"/api/workspaces/{workspace}/members")).json()["members"]
    grace_id = next(m["user_id"] for m in members if m["name"] == "Grace Hopper")
    changed = await web.api.patch(
        f"/api/workspaces/{workspace}/members/{grace_id}", json={"role": "viewer"}
    )
    assert changed.status_code == 200, changed.text

    # The server tells the open page (4403 close or its awareness notice): it turns read-only.
    await expect(grace.locator(".view-only-badge")).to_have_text("View only")
    await expect(grace.locator(".conn-badge")).to_have_attribute("data-state", "online")
    await expect(editor(grace, "c0")).to_have_attribute("contenteditable", "false")
    await wait_text(grace, "c0", "v = 1")


async def test_a_new_name_reaches_the_people_already_in_the_notebook(web: WebWeft) -> None:
    notebook = await web.notebook([{"cell_type": "code", "source": ""}], title="Names")
    ada = await web.open_notebook(await web.person(*ADA), notebook)
    grace = await web.open_notebook(await web.person(*GRACE), notebook)
    await expect(grace.locator(".people")).to_have_attribute("title", "Here now: Ada Lovelace")

    await ada.locator("button.me-chip").click()
    await ada.get_by_role("textbox", name="Others see this").fill("Countess Ada")
    await ada.get_by_role("button", name="Save").click()
    await expect(ada.locator(".me-name")).to_have_text("Countess Ada")
    # Live for the others, and kept: the account has the new name.
    await expect(grace.locator(".people")).to_have_attribute("title", "Here now: Countess Ada")
    await ada.reload()
    await expect(ada.locator(".me-name")).to_have_text("Countess Ada")


async def test_a_stored_token_opens_the_socket_with_a_ticket_not_in_the_url(web: WebWeft) -> None:
    """A browser holding an API token (no cookie) never puts it in a URL: the page asks for
    a short-lived socket ticket and connects with that."""
    notebook = await web.notebook([{"cell_type": "code", "source": "t = 1"}], title="Tickets")
    token = (await web.api.post("/api/auth/tokens", json={"label": "browser"})).json()["token"]
    context = await web.person("nobody", "#30a46c", signed_in=False)
    await context.add_init_script(
        f"if (window === window.top) localStorage.setItem('weft.token', {json.dumps(token)});"
    )
    page = await context.new_page()
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    await page.goto(f"/notebooks/{notebook}")
    await expect(page.locator(".conn-badge")).to_have_attribute("data-state", "online")
    await wait_text(page, "c0", "t = 1")
    assert sockets
    assert all("ticket=wft_" in url and token not in url for url in sockets), sockets
    assert token not in web.server.log_text()
