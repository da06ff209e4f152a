"""The README's serve command: no DATABASE_URL, so a private PostgreSQL under the state
directory, started with the server and stopped with it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import httpx
import pytest

from tests.conftest import sign_up
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio


def postmaster_pid(state_dir: Path) -> int:
    return int((state_dir / "postgres" / "postmaster.pid").read_text().split()[0])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_the_embedded_database_keeps_data_and_stops_with_the_server(tmp_path: Path):
    server = ServerProcess(state_dir=tmp_path / "state", env={"DATABASE_URL": ""})
    try:
        await server.start()
        assert "starting embedded PostgreSQL" in server.log_text()
        pid = postmaster_pid(server.state_dir)
        server.token = await sign_up(server.url, "solo@example.org", "Solo")
        async with httpx.AsyncClient(base_url=server.url, headers=server.auth) as api:
            workspace = (await api.post("/api/workspaces", json={"name": "kept"})).json()
        server.stop()
        assert server.proc is not None
        assert server.proc.returncode == 0
        deadline = time.monotonic() + 15
        while alive(pid) and time.monotonic() < deadline:
            await anyio.sleep(0.1)
        assert not alive(pid), "the embedded PostgreSQL outlived the server"

        # The next start runs it again on the same data.
        await server.start()
        async with httpx.AsyncClient(base_url=server.url, headers=server.auth) as api:
            response = await api.get(f"/api/workspaces/{workspace['id']}")
            assert response.status_code == 200
            assert response.json()["name"] == "kept"
    finally:
        server.stop()
