"""The suggestion's exact range in the document: the ``assist`` mark carries the assistant's
runs of text as Yjs relative positions, and another client (the official Yjs client under
Node) resolves them, in its own copy of the text, to exactly the assistant's characters
while people type before, inside and right next to them, with 4-byte characters around."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from tests.ai.conftest import assist, notebook_with, wait_state
from tests.conftest import token_of
from tests.support.nodeclient import NodeYClient, node_client
from tests.support.openai_server import FakeOpenAI, Gate, stream
from tests.support.server import ServerProcess


async def resolved(person: NodeYClient, cell: str) -> dict[str, Any]:
    return await person.call("assist_ranges", cell_id=cell)


async def wait_ranges(
    person: NodeYClient, cell: str, texts: list[str], state: str, timeout: float = 4
) -> dict[str, Any]:
    """Until the person's copy resolves the mark's ranges to exactly ``texts``."""
    seen: dict[str, Any] = {}
    try:
        with anyio.fail_after(timeout):
            while True:
                seen = await resolved(person, cell)
                if seen["state"] == state and [r["text"] for r in seen["ranges"]] == texts:
                    return seen
                await anyio.sleep(0.02)
    except TimeoutError:
        raw = await person.call("assist")
        raise AssertionError(f"ranges never became {texts!r} ({state}): {seen!r} {raw!r}") from None


@pytest.mark.anyio
async def test_the_mark_holds_exactly_the_assistants_characters_while_people_type(
    server: ServerProcess, api: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    notebook_id, _, (cell,) = await notebook_with(api, "a = '😀'\n")
    first, second = Gate(), Gate()
    fake.script(stream("b = '𠀋é🐍'\n", first, "c = '🦀' + b\n", second, "print(c)"))
    async with node_client(server.ws_base, notebook_id, token=token_of(api)) as person:
        generation_id = await assist(api, notebook_id, cell, "more emoji")
        await first.reached()
        # While it streams: the range is the first piece, and nothing of the cell before it.
        await wait_ranges(person, cell, ["b = '𠀋é🐍'"], "streaming")
        # Someone types before it (an emoji too), right at its start, and inside it.
        await person.call("insert", cell=0, index=0, text="# 🙂 Ada\n")
        await person.call("insert_before", cell=0, before="b = ", text="Z")
        await person.call("insert_before", cell=0, before="é🐍", text="👋")
        # Typing before it, or right at its edge, needs no new ranges: they resolve at once
        # (the assistant holds a trailing newline back until more code comes).
        now = await resolved(person, cell)
        assert now["ranges"][0]["text"].startswith("b = '𠀋"), now
        assert now["text"] == "# 🙂 Ada\na = '😀'\nZb = '𠀋👋é🐍'"
        first.open()
        await second.reached()
        # The server splits the range around what was typed inside it.
        await wait_ranges(person, cell, ["b = '𠀋", "é🐍'\nc = '🦀' + b"], "streaming")
        second.open()
        generation = await wait_state(api, generation_id, "pending")
        assert generation["code"] == "b = '𠀋é🐍'\nc = '🦀' + b\nprint(c)"
        pending = await wait_ranges(
            person, cell, ["b = '𠀋", "é🐍'\nc = '🦀' + b\nprint(c)"], "pending"
        )
        assert "".join(r["text"] for r in pending["ranges"]) == generation["code"]
        text = pending["text"]
        assert text == "# 🙂 Ada\na = '😀'\nZb = '𠀋👋é🐍'\nc = '🦀' + b\nprint(c)"
        # UTF-16 offsets in the person's copy: the text before counts 2 units per emoji.
        (one, two) = pending["ranges"]
        assert one["from"] == len("# 🙂 Ada\na = '😀'\nZ".encode("utf-16-le")) // 2
        assert two["to"] == len(text.encode("utf-16-le")) // 2
        # Typing after the end stays outside; inside the pending one splits it again.
        await person.call("insert", cell=0, text="  # ✅")
        await person.call("insert_before", cell=0, before="🦀", text="🐛")
        await wait_ranges(person, cell, ["b = '𠀋", "é🐍'\nc = '", "🦀' + b\nprint(c)"], "pending")
        rejected = await api.post(f"/api/generations/{generation_id}/reject")
        assert rejected.status_code == 200, rejected.text
        await person.wait_text("👋🐛  # ✅")
        with anyio.fail_after(10):
            while (await resolved(person, cell))["state"] is not None:
                await anyio.sleep(0.02)
        assert await person.text(0) == "# 🙂 Ada\na = '😀'\nZ👋🐛  # ✅"
