"""The assistant with two servers: a generation runs on the server that started it, and
any server shows it and passes accept, reject or cancel on to it."""

from __future__ import annotations

import httpx
import pytest

from tests.ai.conftest import assist, assistant_env, notebook_with, wait_state
from tests.conftest import StartServer, sign_up, token_of
from tests.support.nodeclient import node_client
from tests.support.openai_server import FakeOpenAI, Gate, stream
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio


async def two_servers(start_server: StartServer, fake: FakeOpenAI) -> list[ServerProcess]:
    return [await start_server(**assistant_env(fake)) for _ in range(2)]


def api_of(server: ServerProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=30, headers=server.auth)


async def test_cancel_and_reject_through_the_other_server(
    start_server: StartServer, fake: FakeOpenAI
) -> None:
    one, two = await two_servers(start_server, fake)
    original = "x = 1\n"
    gate = Gate()
    fake.script(stream("y = 2\n", gate, "never = 'sent'\n"))
    async with api_of(one) as api_one, api_of(two) as api_two:
        notebook_id, _, (cell,) = await notebook_with(api_one, original)
        async with node_client(two.ws_base, notebook_id, token=token_of(api_two)) as person:
            generation_id = await assist(api_one, notebook_id, cell, "more")
            await gate.reached()
            await person.wait_text("y = 2")
            # Server two has never run it, yet shows it and stops it.
            shown = await api_two.get(f"/api/generations/{generation_id}")
            assert shown.status_code == 200, shown.text
            assert shown.json()["state"] == "streaming"
            cancelled = await api_two.post(f"/api/generations/{generation_id}/cancel")
            gate.open()
            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json()["state"] == "pending"
            assert cancelled.json()["finish_reason"] == "cancelled"
            assert cancelled.json()["code"] == "y = 2"
            rejected = await api_two.post(f"/api/generations/{generation_id}/reject")
            assert rejected.status_code == 200, rejected.text
            assert rejected.json()["state"] == "rejected"
            await person.wait_exact_text(original)
            # Asking again is fine; the opposite is refused, as on one server.
            assert (await api_two.post(f"/api/generations/{generation_id}/reject")).is_success
            late = await api_two.post(f"/api/generations/{generation_id}/accept")
            assert late.status_code == 409
            assert "already rejected" in late.json()["error"]["message"]


async def test_accept_through_the_other_server_and_one_generation_per_cell(
    start_server: StartServer, fake: FakeOpenAI
) -> None:
    one, two = await two_servers(start_server, fake)
    fake.script(stream("c = a + b"), stream("d = 4"))
    async with api_of(one) as api_one, api_of(two) as api_two:
        notebook_id, _, (cell,) = await notebook_with(api_one, "a = 1\n")
        generation_id = await assist(api_one, notebook_id, cell, "sum")
        await wait_state(api_two, generation_id, "pending")
        # The cell is taken on server one: server two does not start another in it.
        busy = await api_two.post(
            f"/api/notebooks/{notebook_id}/cells/{cell}/assist", json={"instruction": "more"}
        )
        assert busy.status_code == 409, busy.text
        assert "another server" in busy.json()["error"]["message"]
        accepted = await api_two.post(f"/api/generations/{generation_id}/accept")
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["state"] == "accepted"
        # Now free: server two writes in it.
        second = await assist(api_two, notebook_id, cell, "more")
        assert (await wait_state(api_one, second, "pending"))["code"].strip() == "d = 4"


async def test_only_the_requester_may_act_and_strangers_see_nothing(
    start_server: StartServer, fake: FakeOpenAI
) -> None:
    one, two = await two_servers(start_server, fake)
    fake.script(stream("z = 0"))
    async with api_of(one) as api_one:
        notebook_id, workspace_id, (cell,) = await notebook_with(api_one, "")
        generation_id = await assist(api_one, notebook_id, cell, "zero")
        await wait_state(api_one, generation_id, "pending")
        eve = await sign_up(one.url, "eve@example.org", "Eve")
        ed = await sign_up(one.url, "ed@example.org", "Ed")
        added = await api_one.post(
            f"/api/workspaces/{workspace_id}/members",
            json={"email": "ed@example.org", "role": "editor"},
        )
        assert added.status_code == 201, added.text
    headers = {"Authorization": f"Bearer {ed}"}
    async with httpx.AsyncClient(base_url=two.url, headers=headers) as ed_two:
        refused = await ed_two.post(f"/api/generations/{generation_id}/accept")
        assert refused.status_code == 403
        assert "Olive Owner" in refused.json()["error"]["message"]
    headers = {"Authorization": f"Bearer {eve}"}
    async with httpx.AsyncClient(base_url=two.url, headers=headers) as eve_two:
        assert (await eve_two.get(f"/api/generations/{generation_id}")).status_code == 404
