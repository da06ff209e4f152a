"""Code written into the cell live, as a peer edit every collaborator sees; suggestions
accepted or rejected while people type; cancel; presence."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from tests.ai.conftest import assist, export_sources, notebook_with, wait_assist, wait_state
from tests.conftest import token_of
from tests.support.nodeclient import node_client
from tests.support.openai_server import FakeOpenAI, Gate, stream
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio

CODE = (
    "import pandas as pd\n"
    "sales = pd.read_csv('sales.csv')\n"
    "sales.groupby('month').revenue.sum().plot()"
)


async def test_code_streams_into_the_cell_for_everyone(
    server: ServerProcess, api: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    notebook_id, _, (cell,) = await notebook_with(api, "")
    first, second = Gate(), Gate()
    fake.script(
        stream(
            "Here is the code:\n",
            "```python\n",
            "import pandas as pd\n",
            first,
            "sales = pd.read_csv(",
            "'sales.csv')\n",
            second,
            "sales.groupby('month').revenue.sum().plot()\n",
            "```\n",
            "This plots revenue by month.",
        )
    )
    async with node_client(server.ws_base, notebook_id, token=token_of(api)) as person:
        await person.call("watch_text", cell_id=cell)
        generation_id = await assist(api, notebook_id, cell, "plot revenue by month from sales")
        await first.reached()
        await person.wait_text("import pandas as pd")
        first.open()
        await second.reached()
        await person.wait_text("sales = pd.read_csv('sales.csv')")
        second.open()
        generation = await wait_state(api, generation_id, "pending")
        await person.wait_text("plot()")
        texts = (await person.call("texts"))["texts"]
        assert texts[0] == ""
        assert texts[-1] == CODE
        intermediate = [t for t in texts[1:-1] if t]
        assert len(intermediate) >= 2, texts
        assert all(CODE.startswith(t) for t in intermediate), texts  # grows in, never garbled
        assert generation["code"] == CODE
        # Everyone sees that it is a pending suggestion, and for whom.
        mark = (await person.call("assist"))["assist"][cell]
        assert mark["state"] == "pending"
        assert mark["generation_id"] == generation_id
        assert mark["by"]["id"] == generation["requested_by"]["id"]
        accepted = await api.post(f"/api/generations/{generation_id}/accept")
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["state"] == "accepted"
        await wait_assist(person, cell, present=False)
    assert await export_sources(api, notebook_id) == [CODE]
    request = fake.bodies()[0]
    assert request["model"] == "gpt-4o-mini"
    assert request["stream"] is True
    assert "plot revenue by month from sales" in request["messages"][-1]["content"]


async def test_a_person_typing_in_the_cell_during_generation_keeps_both(
    server: ServerProcess, api: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    notebook_id, _, (cell,) = await notebook_with(api, "# load\nx = 1\n")
    gate = Gate()
    fake.script(stream("y = x + 1\n", gate, "z = y * 2\n", "print(z)", delay=0.02))
    async with node_client(server.ws_base, notebook_id, token=token_of(api)) as person:
        generation_id = await assist(api, notebook_id, cell, "double it")
        await gate.reached()
        await person.wait_text("y = x + 1")
        # Typing before the generated code, inside the old code, and after everything.
        await person.call("insert", cell=0, index=0, text="# by Ada\n")
        await person.call("insert_before", cell=0, before="x = 1", text="x0 = 0\n")
        typing = await person.call("type", cell=0, count=5, interval=15, prefix="#t")
        assert typing["typed"] == 5
        gate.open()
        generation = await wait_state(api, generation_id, "pending")
        await person.wait_text("print(z)")
        text = await person.text(0)
    assert generation["code"] == "y = x + 1\nz = y * 2\nprint(z)"
    assert text.startswith("# by Ada\n# load\nx0 = 0\nx = 1\n")
    for n in range(5):
        assert f"#t{n} " in text
    # The assistant's lines are whole and in order, whatever was typed around them.
    assert "y = x + 1\n" in text
    assert "z = y * 2\nprint(z)" in text
    assert text.index("y = x + 1") < text.index("z = y * 2")


async def test_reject_restores_the_cell_and_keeps_what_others_typed(
    server: ServerProcess, api: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    original = "df = load()\ndf.plot()\n"
    notebook_id, _, (cell,) = await notebook_with(api, original)
    gate = Gate()
    fake.script(stream("```python\n", "df = load()\n", gate, "df.plot(kind='bar')\n```"))
    async with node_client(server.ws_base, notebook_id, token=token_of(api)) as person:
        generation_id = await assist(api, notebook_id, cell, "make it a bar chart", mode="edit")
        await gate.reached()
        # The whole cell is being replaced: the old code gave way to the new.
        await person.wait_text("df = load()")
        gate.open()
        await wait_state(api, generation_id, "pending")
        await person.wait_text("kind='bar'")
        assert await person.text(0) == "df = load()\ndf.plot(kind='bar')"
        # Someone else types in the cell while the suggestion is pending.
        await person.call("insert", cell=0, index=0, text="# note\n")
        await person.wait_text("# note")
        await anyio.sleep(0.2)  # let the server apply it
        rejected = await api.post(f"/api/generations/{generation_id}/reject")
        assert rejected.status_code == 200, rejected.text
        assert rejected.json()["state"] == "rejected"
        await wait_assist(person, cell, present=False)
        await person.wait_exact_text("# note\n" + original)
    assert await export_sources(api, notebook_id) == ["# note\n" + original]


async def test_accept_leaves_plain_text_with_others_edits(
    server: ServerProcess, api: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    notebook_id, _, (cell,) = await notebook_with(api, "a = 1\nb = 2\n")
    fake.script(stream("c = a + b"))
    async with node_client(server.ws_base, notebook_id, token=token_of(api)) as person:
        # Replace the selection "b = 2" (UTF-16 offsets, as an editor counts).
        generation_id = await assist(
            api, notebook_id, cell, "sum them", selection={"from": 6, "to": 11}
        )
        await wait_state(api, generation_id, "pending")
        await person.wait_text("c = a + b")
        await person.call("type", cell=0, count=2, interval=5, prefix="#x")
        await person.wait_text("#x1 ")
        await wait_assist(person, cell, present=True)
        accepted = await api.post(f"/api/generations/{generation_id}/accept")
        assert accepted.json()["state"] == "accepted"
        await wait_assist(person, cell, present=False)
        # Accepting again is harmless; rejecting an accepted suggestion is refused.
        again = await api.post(f"/api/generations/{generation_id}/accept")
        assert again.status_code == 200
        late = await api.post(f"/api/generations/{generation_id}/reject")
        assert late.status_code == 409
        assert await person.text(0) == "a = 1\nc = a + b\n#x0 #x1 "
    request = fake.bodies()[0]["messages"][-1]["content"]
    assert "a = 1\n<SELECTION>b = 2</SELECTION>" in request


async def test_cancel_stops_the_stream_and_leaves_the_partial_suggestion(
    server: ServerProcess, api: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    notebook_id, _, (cell,) = await notebook_with(api, "x = 1\n")
    gate = Gate()
    fake.script(stream("y = 2\n", gate, "never = 'sent'\n"))
    async with node_client(server.ws_base, notebook_id, token=token_of(api)) as person:
        generation_id = await assist(api, notebook_id, cell, "more")
        await gate.reached()
        await person.wait_text("y = 2")
        cancelled = await api.post(f"/api/generations/{generation_id}/cancel")
        gate.open()
        assert cancelled.status_code == 200, cancelled.text
        body = cancelled.json()
        assert body["state"] == "pending"
        assert body["finish_reason"] == "cancelled"
        assert body["code"] == "y = 2"
        await anyio.sleep(0.3)
        assert "never" not in await person.text(0)
        assert await person.text(0) == "x = 1\ny = 2"
        # Still a suggestion: rejecting it gives the cell back as it was.
        rejected = await api.post(f"/api/generations/{generation_id}/reject")
        assert rejected.json()["state"] == "rejected"
        await person.wait_exact_text("x = 1\n")


async def test_presence_shows_the_assistant_writing_and_for_whom(
    server: ServerProcess, api: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    notebook_id, _, (cell,) = await notebook_with(api, "")
    gate = Gate()
    fake.script(stream("x = 1\n", gate, "y = 2"))
    async with node_client(server.ws_base, notebook_id, token=token_of(api)) as person:
        generation_id = await assist(api, notebook_id, cell, "two numbers")
        await gate.reached()
        me = (await api.get(f"/api/generations/{generation_id}")).json()["requested_by"]

        async def assistant_present() -> list[dict[str, Any]]:
            peers = (await person.call("peers"))["peers"]
            return [p["state"] for p in peers if (p["state"] or {}).get("assistant")]

        with anyio.fail_after(10):
            while not await assistant_present():
                await anyio.sleep(0.02)
        (state,) = await assistant_present()
        assert state["cell"] == cell
        assert state["user"]["name"] == f"Assistant (for {me['name']})"
        assert state["assistant"]["for"] == me
        assert state["assistant"]["generation_id"] == generation_id
        gate.open()
        await wait_state(api, generation_id, "pending")
        with anyio.fail_after(10):
            while await assistant_present():
                await anyio.sleep(0.02)
