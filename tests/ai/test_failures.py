"""Provider failures, cancel, limits and who may do what: the partial text goes, the
requester is told why, and the server keeps serving."""

from __future__ import annotations

import httpx
import pytest

from tests.ai.conftest import (
    API_KEY,
    assist,
    assistant_env,
    notebook_with,
    wait_assist,
    wait_state,
)
from tests.conftest import StartServer, sign_up, token_of
from tests.support.nodeclient import node_client
from tests.support.openai_server import FakeOpenAI, Gate, dropped, error, stream
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("failure", "code", "words"),
    [
        (error(429), "rate_limited", "HTTP 429"),
        (error(500), "provider_error", "HTTP 500"),
        (None, "connection", "broke while streaming"),
    ],
    ids=["429", "500", "dropped"],
)
async def test_a_provider_failure_removes_the_partial_text_and_says_why(
    server: ServerProcess,
    api: httpx.AsyncClient,
    fake: FakeOpenAI,
    failure: object,
    code: str,
    words: str,
) -> None:
    original = "total = 0\n"
    notebook_id, _, (cell,) = await notebook_with(api, original)
    gate = Gate()
    if failure is None:
        fake.script(dropped("```python\n", "for x in ", "range(3):\n", gate, "    total += x"))
    else:
        # The failure arrives with the first request; a partial stream is cut by retrying
        # it as a failed one below.
        fake.script(failure)  # type: ignore[arg-type]
    async with node_client(server.ws_base, notebook_id, token=token_of(api)) as person:
        generation_id = await assist(api, notebook_id, cell, "sum to three", mode="edit")
        if failure is None:
            await gate.reached()
            await person.wait_text("for x in range(3):")
            gate.open()
        generation = await wait_state(api, generation_id, "failed")
        assert generation["error"]["code"] == code
        assert words in generation["error"]["message"]
        assert API_KEY not in str(generation)
        await wait_assist(person, cell, present=False)
        await person.wait_exact_text(original)
        # The server keeps serving: the next request on the same cell works.
        fake.script(stream("total = sum(range(3))"))
        again = await assist(api, notebook_id, cell, "sum to three", mode="edit")
        assert (await wait_state(api, again, "pending"))["code"] == "total = sum(range(3))"
        await person.wait_text("total = sum(range(3))")
    assert API_KEY not in server.log_text()


async def test_a_stream_that_stalls_times_out(start_server: StartServer, fake: FakeOpenAI) -> None:
    server = await start_server(
        **assistant_env(fake, WEFT_AI_IDLE_TIMEOUT_SECONDS="0.5", WEFT_AI_MAX_OUTPUT_TOKENS="6")
    )
    async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=30) as api:
        notebook_id, _, (cell,) = await notebook_with(api, "")
        gate = Gate()
        fake.script(stream("a = 1\n", gate, "b = 2"))
        generation_id = await assist(api, notebook_id, cell, "two names")
        await gate.reached()
        generation = await wait_state(api, generation_id, "failed")
        gate.open()
        assert generation["error"]["code"] == "timeout"
        assert "stopped sending for 0.5 s" in generation["error"]["message"]
        notebook = (await api.get(f"/api/notebooks/{notebook_id}/export")).json()
        assert "".join(notebook["cells"][0]["source"]) == ""
        # The output cap: sent as max_tokens, and enforced on a server that ignores it.
        fake.script(stream(*[f"v{n} = {n}\n" for n in range(50)]))
        capped = await assist(api, notebook_id, cell, "many names")
        generation = await wait_state(api, capped, "pending")
        assert generation["finish_reason"] == "length"
        assert generation["code"].startswith("v0 = 0")
        assert "v49" not in generation["code"]
        assert fake.bodies()[-1]["max_tokens"] == 6


async def test_without_a_key_the_endpoints_say_how_to_configure(
    start_server: StartServer,
) -> None:
    server = await start_server(WEFT_EXECUTOR="off", OPENAI_API_KEY="")
    async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=30) as api:
        notebook_id, _, (cell,) = await notebook_with(api, "")
        response = await api.post(
            f"/api/notebooks/{notebook_id}/cells/{cell}/assist", json={"instruction": "x"}
        )
    assert response.status_code == 503
    assert "OPENAI_API_KEY" in response.json()["error"]["message"]


async def test_one_generation_per_cell_and_a_rate_limit_per_person(
    start_server: StartServer, fake: FakeOpenAI
) -> None:
    server = await start_server(**assistant_env(fake, WEFT_AI_RATE_LIMIT="3"))
    async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=30) as api:
        notebook_id, _, (first, second) = await notebook_with(api, "", "")
        gate = Gate()
        fake.script(stream("x = 1", gate), stream("y = 2"))
        streaming = await assist(api, notebook_id, first, "one")
        await gate.reached()
        busy = await api.post(
            f"/api/notebooks/{notebook_id}/cells/{first}/assist", json={"instruction": "again"}
        )
        assert busy.status_code == 409
        assert "already writing in this cell" in busy.json()["error"]["message"]
        # Another cell is free.
        other = await assist(api, notebook_id, second, "two")
        await wait_state(api, other, "pending")
        gate.open()
        await wait_state(api, streaming, "pending")
        # The refused request cost nothing; a third one is served, a fourth must wait.
        fake.script(stream("z = 3"))
        third = await assist(api, notebook_id, second, "three")
        await wait_state(api, third, "pending")
        limited = await api.post(
            f"/api/notebooks/{notebook_id}/cells/{second}/assist", json={"instruction": "four"}
        )
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert "at most 3 assistant requests" in limited.json()["error"]["message"]
        assert len(fake.bodies()) == 3


async def test_a_new_request_resolves_the_pending_suggestion_first(
    server: ServerProcess, api: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    notebook_id, _, (cell,) = await notebook_with(api, "a = 1\n")
    fake.script(stream("b = 2"), stream("c = 3"), stream("d = 4"))
    first = await assist(api, notebook_id, cell, "b")
    await wait_state(api, first, "pending")
    # Default: the pending suggestion is accepted, and the new request sees its code.
    second = await assist(api, notebook_id, cell, "c")
    assert (await api.get(f"/api/generations/{first}")).json()["state"] == "accepted"
    await wait_state(api, second, "pending")
    assert "b = 2" in fake.bodies()[1]["messages"][-1]["content"]
    # Or rejected, if the request says so.
    third = await assist(api, notebook_id, cell, "d", resolve_pending="reject")
    assert (await api.get(f"/api/generations/{second}")).json()["state"] == "rejected"
    await wait_state(api, third, "pending")
    notebook = (await api.get(f"/api/notebooks/{notebook_id}/export")).json()
    assert "".join(notebook["cells"][0]["source"]) == "a = 1\nb = 2\nd = 4"
    metrics = (await api.get("/metrics")).text
    assert 'weft_assistant_requests_total{mode="generate"} 3.0' in metrics
    assert 'weft_assistant_generations_total{outcome="accepted"} 1.0' in metrics
    assert 'weft_assistant_generations_total{outcome="rejected"} 1.0' in metrics
    assert 'weft_assistant_tokens_total{kind="prompt"}' in metrics


async def test_viewers_cannot_start_and_only_the_requester_resolves(
    server: ServerProcess, api: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    notebook_id, workspace_id, (cell,) = await notebook_with(api, "")
    people = {}
    for role in ("viewer", "editor"):
        token = await sign_up(server.url, f"{role}@example.org", role.title())
        added = await api.post(
            f"/api/workspaces/{workspace_id}/members",
            json={"email": f"{role}@example.org", "role": role},
        )
        assert added.status_code == 201, added.text
        people[role] = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=server.url, headers=people["viewer"]) as viewer,
        httpx.AsyncClient(base_url=server.url, headers=people["editor"]) as editor,
    ):
        refused = await viewer.post(
            f"/api/notebooks/{notebook_id}/cells/{cell}/assist", json={"instruction": "x"}
        )
        assert refused.status_code == 403
        fake.script(stream("x = 1"))
        generation_id = await assist(api, notebook_id, cell, "x")
        await wait_state(api, generation_id, "pending")
        # Viewers may see it; another editor may not resolve someone else's suggestion.
        seen = await viewer.get(f"/api/generations/{generation_id}")
        assert seen.status_code == 200
        assert seen.json()["state"] == "pending"
        for action in ("accept", "reject", "cancel"):
            response = await editor.post(f"/api/generations/{generation_id}/{action}")
            assert response.status_code == 403, (action, response.text)
            response = await viewer.post(f"/api/generations/{generation_id}/{action}")
            assert response.status_code == 403, (action, response.text)
        # Nor start over it in the same cell.
        busy = await editor.post(
            f"/api/notebooks/{notebook_id}/cells/{cell}/assist", json={"instruction": "y"}
        )
        assert busy.status_code == 409
        assert "pending" in busy.json()["error"]["message"]
    assert len(fake.bodies()) == 1
    async with httpx.AsyncClient(base_url=server.url) as nobody:
        anonymous = await nobody.get(f"/api/generations/{generation_id}")
    assert anonymous.status_code == 401


async def test_bad_requests_are_refused_clearly(
    server: ServerProcess, api: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    notebook_id, _, (cell,) = await notebook_with(api, "x = 1\n")
    url = f"/api/notebooks/{notebook_id}/cells/{cell}/assist"
    cases = [
        ({"instruction": ""}, 400, "'instruction' is required"),
        ({"instruction": "x", "mode": "poem"}, 400, "'mode' must be one of"),
        ({"instruction": "x", "selection": {"from": -1}}, 400, "offsets"),
        ({"mode": "fix"}, 400, "no error to fix"),
    ]
    for body, status, words in cases:
        response = await api.post(url, json=body)
        assert response.status_code == status, response.text
        assert words in response.json()["error"]["message"]
    missing = await api.post(
        f"/api/notebooks/{notebook_id}/cells/nope/assist", json={"instruction": "x"}
    )
    assert missing.status_code == 404
    unknown = await api.get("/api/generations/00000000-0000-0000-0000-000000000001")
    assert unknown.status_code == 404
    assert fake.bodies() == []
