"""Assistant fixtures: a fake OpenAI-compatible server (a real HTTP server on 127.0.0.1)
and a real Weft server configured to use it. ``api`` (tests/conftest.py) talks to it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from tests.conftest import StartServer, import_code_notebook
from tests.support.nodeclient import NodeYClient
from tests.support.openai_server import FakeOpenAI
from tests.support.server import ServerProcess

API_KEY = "sk-test-0123456789abcdefSECRET"


def assistant_env(fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": fake.base_url,
        "WEFT_AI_MODEL": "gpt-4o-mini",
        "WEFT_AI_MAX_RETRIES": "0",
        "WEFT_AI_IDLE_TIMEOUT_SECONDS": "5",
        "WEFT_AI_REQUEST_TIMEOUT_SECONDS": "5",
        # No Docker needed for these: this server only queues runs.
        "WEFT_EXECUTOR": "off",
        **extra,
    }


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def server(start_server: StartServer, fake: FakeOpenAI) -> ServerProcess:
    """Overrides tests/conftest.py's: the same server, with the assistant configured."""
    return await start_server(**assistant_env(fake))


async def notebook_with(
    api: httpx.AsyncClient,
    *cells: str | tuple[str, dict[str, Any]],
    workspace_id: str | None = None,
) -> tuple[str, str, list[str]]:
    """A notebook whose code cells hold ``cells``: (notebook id, workspace id, cell ids)."""
    if workspace_id is None:
        workspace = await api.post("/api/workspaces", json={"name": "ws"})
        assert workspace.status_code == 201, workspace.text
        workspace_id = str(workspace.json()["id"])
    notebook_id, cell_ids = await import_code_notebook(api, workspace_id, cells)
    return notebook_id, workspace_id, cell_ids


async def assist(
    api: httpx.AsyncClient, notebook_id: str, cell_id: str, instruction: str, **body: Any
) -> str:
    response = await api.post(
        f"/api/notebooks/{notebook_id}/cells/{cell_id}/assist",
        json={"instruction": instruction, **body},
    )
    assert response.status_code == 202, response.text
    generation_id: str = response.json()["generation_id"]
    return generation_id


async def wait_state(
    api: httpx.AsyncClient, generation_id: str, *states: str, timeout: float = 20
) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while True:
            response = await api.get(f"/api/generations/{generation_id}")
            assert response.status_code == 200, response.text
            generation: dict[str, Any] = response.json()
            if generation["state"] in states:
                return generation
            await anyio.sleep(0.02)


async def export_sources(api: httpx.AsyncClient, notebook_id: str) -> list[str]:
    exported = (await api.get(f"/api/notebooks/{notebook_id}/export")).json()
    return [
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in exported["cells"]
    ]


async def wait_assist(
    person: NodeYClient, cell_id: str, present: bool, timeout: float = 10
) -> None:
    """Until the person's copy of the document has (or no longer has) a mark on the cell."""
    with anyio.fail_after(timeout):
        while (cell_id in (await person.call("assist"))["assist"]) != present:
            await anyio.sleep(0.02)
