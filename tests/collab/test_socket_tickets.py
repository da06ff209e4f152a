"""Socket credentials: short-lived tickets instead of tokens in URLs, and no credential in
any log line."""

from __future__ import annotations

import json
import re

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import PASSWORD, StartServer, new_notebook
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio


async def opened(url: str) -> ClientConnection:
    """A socket the server accepted and began to sync on (its sync step 1 arrived)."""
    ws = await connect(url)
    with anyio.fail_after(10):
        await ws.recv()
    return ws


async def refused(url: str) -> int | None:
    """The close code of a socket the server closes without syncing."""
    async with connect(url) as ws:
        with anyio.fail_after(10), pytest.raises(ConnectionClosed):
            await ws.recv()
        return ws.close_code


async def ticket_for(api: httpx.AsyncClient, notebook_id: str) -> dict[str, object]:
    response = await api.post("/api/auth/socket-ticket", json={"notebook_id": notebook_id})
    assert response.status_code == 201, response.text
    answer: dict[str, object] = response.json()
    return answer


def assert_no_secret_in(log: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in log
    assert not re.search(r"(token|ticket)=(?!\[redacted\])", log)


async def wait_for_lines(server: ServerProcess, event: str, count: int) -> list[str]:
    """The server log's events once ``count`` of them contain ``event``."""
    with anyio.fail_after(10):
        while True:
            events = []
            for line in server.log_text().splitlines():
                try:
                    events.append(json.loads(line)["event"])
                except ValueError:
                    continue  # the line being written as we read (its end not there yet)
            if sum(event in e for e in events) >= count:
                return events
            await anyio.sleep(0.05)


async def test_no_credential_reaches_the_server_log(server: ServerProcess, api: httpx.AsyncClient):
    notebook_id = await new_notebook(api)
    assert server.token is not None
    # A long-lived token in the URL: still accepted, for compatibility, but never logged;
    # nor a wrong one, nor a share link's token in a path.
    ws = await opened(f"{server.ws_base}/{notebook_id}?token={server.token}")
    await ws.close()
    assert (
        await refused(f"{server.ws_base}/{notebook_id}?token=wfs_not_a_real_token_at_all") == 4401
    )
    workspace_id = (await api.get(f"/api/notebooks/{notebook_id}")).json()["workspace_id"]
    link = (await api.post(f"/api/workspaces/{workspace_id}/links", json={})).json()
    async with httpx.AsyncClient(base_url=server.url) as anon:
        assert (await anon.get(f"/api/links/{link['token']}")).status_code == 200
    events = await wait_for_lines(server, "client left", 1)
    assert_no_secret_in(server.log_text(), server.token, "wfs_not_a_real", link["token"])
    # uvicorn's line for each socket is there, without its query string.
    accepted = [e for e in events if e.endswith(f'"WebSocket /ws/{notebook_id}" [accepted]')]
    assert len(accepted) == 2
    # A ticket, and the same ticket again for a reconnect: not logged either.
    ticket = str((await ticket_for(api, notebook_id))["ticket"])
    assert ticket.startswith("wft_")
    for _ in range(2):
        ws = await opened(f"{server.ws_base}/{notebook_id}?ticket={ticket}")
        await ws.close()
    await wait_for_lines(server, "client left", 3)
    assert_no_secret_in(server.log_text(), server.token, ticket)


async def test_a_ticket_opens_one_notebook_for_a_few_minutes(start_server: StartServer):
    server = await start_server(WEFT_SOCKET_TICKET_SECONDS="3")
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=server.auth) as api:
        notebook_id = await new_notebook(api)
        other_id = await new_notebook(api)
        answer = await ticket_for(api, notebook_id)
        assert answer["notebook_id"] == notebook_id
        assert answer["expires_in"] == 3
        ticket = answer["ticket"]
        url = f"{server.ws_base}/{notebook_id}?ticket={ticket}"
        # Any number of connects within its lifetime (y-websocket reconnects with it)...
        sockets = [await opened(url) for _ in range(3)]
        # ...to that notebook only.
        assert await refused(f"{server.ws_base}/{other_id}?ticket={ticket}") == 4401
        # Not a credential anywhere else.
        bearer = {"Authorization": f"Bearer {ticket}"}
        assert (await api.get(f"/api/notebooks/{notebook_id}", headers=bearer)).status_code == 401
        # Worthless once it expires; the sockets it opened live on with their credential.
        await anyio.sleep(3.5)
        assert await refused(url) == 4401
        for ws in sockets:
            await ws.ping()
            await ws.close()
        # Only for notebooks the caller may open; never without a credential.
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as anon:
            response = await anon.post("/api/auth/socket-ticket", json={"notebook_id": other_id})
            assert response.status_code == 401
            signup = await anon.post(
                "/api/auth/signup",
                json={"email": "st@example.org", "password": PASSWORD, "name": "St"},
            )
            stranger = {"Authorization": f"Bearer {signup.json()['token']}"}
            response = await anon.post(
                "/api/auth/socket-ticket", json={"notebook_id": other_id}, headers=stranger
            )
            assert response.status_code == 404
            response = await anon.post("/api/auth/socket-ticket", json={}, headers=stranger)
            assert response.status_code == 400


async def test_logging_out_ends_the_tickets_of_that_session(server: ServerProcess, api):
    notebook_id = await new_notebook(api)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as anon:
        login = await anon.post(
            "/api/auth/login", json={"email": "owner@example.org", "password": PASSWORD}
        )
        session = {"Authorization": f"Bearer {login.json()['token']}"}
        response = await anon.post(
            "/api/auth/socket-ticket", json={"notebook_id": notebook_id}, headers=session
        )
        url = f"{server.ws_base}/{notebook_id}?ticket={response.json()['ticket']}"
        ws = await opened(url)
        assert (await anon.post("/api/auth/logout", headers=session)).status_code == 204
        # The socket the ticket opened closes with its session, and the ticket is void.
        with anyio.fail_after(5):
            try:
                async for _ in ws:
                    pass  # whatever the server sent before closing
            except ConnectionClosed:
                pass
        assert ws.close_code == 4401
        assert await refused(url) == 4401
