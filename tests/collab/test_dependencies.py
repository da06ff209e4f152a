"""A notebook's dependencies (``meta.metadata.dependencies``) are a Y.Array of strings, so two
people adding (or one removing while another adds) at the same moment both keep their edit;
the server reads them as a plain list, as it reads the plain lists of older documents."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, cast

import anyio
import httpx
import pytest
from pycrdt import Array, Doc, Map

from collab.sync.peers import NotebookPeer
from tests.conftest import import_code_notebook, new_notebook, token_of
from tests.support.pyclient import PyYClient, py_client
from tests.support.server import ServerProcess


def dependencies(client: PyYClient) -> Any:
    metadata: Map[Any] = client.doc.get("meta", type=Map)["metadata"]
    return metadata["dependencies"]


async def exported_metadata(api: httpx.AsyncClient, notebook_id: str) -> dict[str, Any]:
    response = await api.get(f"/api/notebooks/{notebook_id}/export")
    assert response.status_code == 200, response.text
    metadata: dict[str, Any] = json.loads(response.content)["metadata"]
    return metadata


async def wait_exported(
    api: httpx.AsyncClient, notebook_id: str, want: list[str]
) -> dict[str, Any]:
    with anyio.fail_after(10):
        while True:
            metadata = await exported_metadata(api, notebook_id)
            if sorted(metadata.get("dependencies") or []) == sorted(want):
                return metadata
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_two_people_adding_at_once_both_keep_their_package(
    server: ServerProcess, api: httpx.AsyncClient
) -> None:
    notebook_id = await new_notebook(api)
    ws, token = server.ws_base, token_of(api)
    async with (
        py_client(ws, notebook_id, token=token) as ada,
        py_client(ws, notebook_id, token=token) as grace,
    ):
        # A new notebook has the list from the start, so nobody has to create it.
        assert isinstance(dependencies(ada), Array)
        assert "dependencies" not in await exported_metadata(api, notebook_id)  # empty: left out
        # Both add before either has seen the other's edit.
        dependencies(ada).append("tabulate")
        dependencies(grace).append("polars>=1.0")
        await ada.flush()
        await grace.flush()
        await wait_exported(api, notebook_id, ["tabulate", "polars>=1.0"])
        with anyio.fail_after(10):
            while len(dependencies(ada)) < 2 or len(dependencies(grace)) < 2:
                await anyio.sleep(0.02)
        assert list(dependencies(ada)) == list(dependencies(grace))

        # One removes a package while the other adds another: both edits survive.
        del dependencies(ada)[list(dependencies(ada)).index("tabulate")]
        dependencies(grace).append("weftdemo==2.0")
        await ada.flush()
        await grace.flush()
        await wait_exported(api, notebook_id, ["polars>=1.0", "weftdemo==2.0"])


@pytest.mark.anyio
async def test_imports_and_copies_keep_the_list_and_old_plain_lists_still_read(
    server: ServerProcess, api: httpx.AsyncClient
) -> None:
    workspace = (await api.post("/api/workspaces", json={"name": "w"})).json()["id"]
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"dependencies": ["tabulate"], "runtime": "gpu"},
        "cells": [],
    }
    response = await api.post(
        f"/api/workspaces/{workspace}/notebooks/import", content=json.dumps(notebook)
    )
    assert response.status_code == 201, response.text
    notebook_id = response.json()["id"]
    copy = await api.post(f"/api/notebooks/{notebook_id}/copy", json={"title": "copy"})
    assert copy.status_code == 201, copy.text
    for each in (notebook_id, copy.json()["id"]):
        metadata = await exported_metadata(api, each)
        assert metadata["dependencies"] == ["tabulate"]
        assert metadata["runtime"] == "gpu"
        async with py_client(server.ws_base, each, token=token_of(api)) as client:
            assert isinstance(dependencies(client), Array)

    # A document written before dependencies were a Y.Array holds a plain list.
    old, _cells = await import_code_notebook(api, workspace, ["x = 1"])
    async with py_client(server.ws_base, old, token=token_of(api)) as client:
        metadata: Map[Any] = client.doc.get("meta", type=Map)["metadata"]
        metadata["dependencies"] = ["tabulate", "weftdemo"]
        await client.flush()
    await wait_exported(api, old, ["tabulate", "weftdemo"])
    # The panel's first edit of such a document makes the list a Y.Array (the server takes it).
    async with py_client(server.ws_base, old, token=token_of(api)) as client:
        metadata = client.doc.get("meta", type=Map)["metadata"]
        metadata["dependencies"] = Array(["tabulate", "weftdemo", "polars"])
        await client.flush()
    await wait_exported(api, old, ["tabulate", "weftdemo", "polars"])


def test_the_server_edits_only_the_entries_that_change() -> None:
    """%pip install replacing an entry (set_metadata_list) merges with a person's concurrent
    add, and a hostile entry it drops goes without harm."""
    server_doc: Doc[Any] = Doc()
    metadata: Map[Any] = Map()
    server_doc.get("meta", type=Map)["metadata"] = metadata
    metadata["dependencies"] = Array(["tabulate", "weftdemo==1.0", {"x": 1}, "polars"])
    person: Doc[Any] = Doc()
    person.apply_update(server_doc.get_update())
    peer = NotebookPeer(cast(Any, SimpleNamespace(doc=server_doc)), cast(Any, None))
    before = person.get_state()
    person_list = person.get("meta", type=Map)["metadata"]["dependencies"]
    person_list.append("weftextra")
    peer.set_metadata_list("dependencies", ["tabulate", "weftdemo==2.0", "polars"])
    server_doc.apply_update(person.get_update(server_doc.get_state()))
    person.apply_update(server_doc.get_update(before))
    for doc in (server_doc, person):
        assert peer_metadata(doc) == ["tabulate", "weftdemo==2.0", "polars", "weftextra"]
    # A plain list (an older document) becomes a Y.Array.
    metadata["dependencies"] = ["tabulate"]
    peer.set_metadata_list("dependencies", ["tabulate", "weftdemo"])
    assert isinstance(metadata["dependencies"], Array)
    assert peer_metadata(server_doc) == ["tabulate", "weftdemo"]


def peer_metadata(doc: Doc[Any]) -> list[Any]:
    value: list[Any] = doc.get("meta", type=Map)["metadata"]["dependencies"].to_py()
    return value
