"""REST endpoints (JSON) for workspaces and notebooks, and .ipynb import and export."""

from __future__ import annotations

import json
import uuid
from typing import Any

import y_py as Y
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collab.catalog import clean_name
from collab.errors import BadRequest, NotFound, PayloadTooLarge
from collab.ids import parse_uuid
from collab.notebook import empty_notebook, parse_ipynb, seed_update, to_ipynb
from collab.services import Services

MAX_JSON_BYTES = 1024 * 1024
MAX_IPYNB_BYTES = 64 * 1024 * 1024


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _id(request: Request, name: str, kind: str) -> uuid.UUID:
    value = parse_uuid(request.path_params[name])
    if value is None:
        raise NotFound(f"no {kind} {request.path_params[name]}")
    return value


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await _body(request, MAX_JSON_BYTES)
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


async def healthz(request: Request) -> Response:
    services = _services(request)
    await services.pool.fetchval("SELECT 1")
    return JSONResponse({"status": "ok", "rooms": services.rooms.count})


async def list_workspaces(request: Request) -> Response:
    return JSONResponse({"workspaces": await _services(request).catalog.list_workspaces()})


async def create_workspace(request: Request) -> Response:
    body = await _json_object(request)
    row = await _services(request).catalog.create_workspace(clean_name(body.get("name"), "name"))
    return JSONResponse(row, status_code=201)


async def get_workspace(request: Request) -> Response:
    return JSONResponse(
        await _services(request).catalog.get_workspace(_id(request, "workspace_id", "workspace"))
    )


async def update_workspace(request: Request) -> Response:
    workspace_id = _id(request, "workspace_id", "workspace")
    body = await _json_object(request)
    name = clean_name(body.get("name"), "name")
    return JSONResponse(await _services(request).catalog.rename_workspace(workspace_id, name))


async def delete_workspace(request: Request) -> Response:
    services = _services(request)
    for notebook_id in await services.catalog.delete_workspace(
        _id(request, "workspace_id", "workspace")
    ):
        services.rooms.evict(notebook_id, "workspace deleted")
    return Response(status_code=204)


async def list_notebooks(request: Request) -> Response:
    workspace_id = _id(request, "workspace_id", "workspace")
    return JSONResponse(
        {"notebooks": await _services(request).catalog.list_notebooks(workspace_id)}
    )


async def _create(
    services: Services, workspace_id: uuid.UUID, title: str, notebook: dict[str, Any]
) -> dict[str, Any]:
    notebook_id = uuid.uuid4()
    notebook.setdefault("metadata", {})["title"] = title
    seed = seed_update(notebook, notebook_id)
    return await services.catalog.create_notebook(workspace_id, notebook_id, title, seed)


async def create_notebook(request: Request) -> Response:
    workspace_id = _id(request, "workspace_id", "workspace")
    body = await _json_object(request)
    title = clean_name(body.get("title", "Untitled"), "title")
    row = await _create(_services(request), workspace_id, title, empty_notebook(title))
    return JSONResponse(row, status_code=201)


async def import_notebook(request: Request) -> Response:
    workspace_id = _id(request, "workspace_id", "workspace")
    notebook = parse_ipynb(await _body(request, MAX_IPYNB_BYTES))
    metadata = notebook.get("metadata") or {}
    title = request.query_params.get("title") or metadata.get("title") or "Imported notebook"
    row = await _create(_services(request), workspace_id, clean_name(str(title), "title"), notebook)
    return JSONResponse(row, status_code=201)


async def get_notebook(request: Request) -> Response:
    return JSONResponse(
        await _services(request).catalog.get_notebook(_id(request, "notebook_id", "notebook"))
    )


async def update_notebook(request: Request) -> Response:
    services = _services(request)
    notebook_id = _id(request, "notebook_id", "notebook")
    body = await _json_object(request)
    title = clean_name(body.get("title"), "title")
    row = await services.catalog.rename_notebook(notebook_id, title)
    # The title lives in the document too, so open clients see the rename live.
    async with services.rooms.use(notebook_id) as room:
        metadata = room.doc.get_map("meta")
        with room.doc.begin_transaction() as txn:
            if "metadata" not in metadata:
                metadata.set(txn, "metadata", Y.YMap({}))
            metadata["metadata"].set(txn, "title", title)
    return JSONResponse(row)


async def delete_notebook(request: Request) -> Response:
    services = _services(request)
    notebook_id = _id(request, "notebook_id", "notebook")
    await services.catalog.delete_notebook(notebook_id)
    services.rooms.evict(notebook_id, "notebook deleted")
    return Response(status_code=204)


async def export_notebook(request: Request) -> Response:
    services = _services(request)
    notebook_id = _id(request, "notebook_id", "notebook")
    row = await services.catalog.get_notebook(notebook_id)
    async with services.rooms.use(notebook_id) as room:
        notebook = to_ipynb(room.doc, title=row["title"])
    filename = "".join(c if c.isalnum() or c in " -_." else "_" for c in row["title"]).strip()
    return Response(
        json.dumps(notebook, indent=1, ensure_ascii=False) + "\n",
        media_type="application/x-ipynb+json",
        headers={"Content-Disposition": f'attachment; filename="{filename or "notebook"}.ipynb"'},
    )


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/api/workspaces", list_workspaces, methods=["GET"]),
    Route("/api/workspaces", create_workspace, methods=["POST"]),
    Route("/api/workspaces/{workspace_id}", get_workspace, methods=["GET"]),
    Route("/api/workspaces/{workspace_id}", update_workspace, methods=["PATCH"]),
    Route("/api/workspaces/{workspace_id}", delete_workspace, methods=["DELETE"]),
    Route("/api/workspaces/{workspace_id}/notebooks", list_notebooks, methods=["GET"]),
    Route("/api/workspaces/{workspace_id}/notebooks", create_notebook, methods=["POST"]),
    Route("/api/workspaces/{workspace_id}/notebooks/import", import_notebook, methods=["POST"]),
    Route("/api/notebooks/{notebook_id}", get_notebook, methods=["GET"]),
    Route("/api/notebooks/{notebook_id}", update_notebook, methods=["PATCH"]),
    Route("/api/notebooks/{notebook_id}", delete_notebook, methods=["DELETE"]),
    Route("/api/notebooks/{notebook_id}/export", export_notebook, methods=["GET"]),
]
