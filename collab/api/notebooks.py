"""REST endpoints (JSON) for workspaces and notebooks, and .ipynb import and export."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collab.api.http import json_object, optional_uuid, path_uuid, read_body
from collab.auth.access import (
    Role,
    files_role,
    identify,
    require_account,
    require_notebook,
    require_workspace,
)
from collab.document.notebook import (
    copy_update,
    empty_notebook,
    parse_ipynb,
    rename_document,
    seed_update,
    to_ipynb,
)
from collab.services.container import Services, services_of
from collab.storage.catalog import clean_name

log = logging.getLogger(__name__)

MAX_IPYNB_BYTES = 64 * 1024 * 1024


async def healthz(request: Request) -> Response:
    services = services_of(request)
    await services.pool.fetchval("SELECT 1")
    return JSONResponse({"status": "ok", "rooms": services.rooms.count})


async def list_workspaces(request: Request) -> Response:
    identity = await identify(request)
    catalog = services_of(request).catalog
    return JSONResponse(
        {"workspaces": await catalog.list_workspaces(identity.user_id, identity.link_id)}
    )


async def create_workspace(request: Request) -> Response:
    identity = await require_account(request)
    body = await json_object(request)
    name = clean_name(body.get("name"), "name")
    row = await services_of(request).catalog.create_workspace(name, identity.user_id)
    return JSONResponse(row, status_code=201)


def _workspace_id(request: Request) -> uuid.UUID:
    return path_uuid(request, "workspace_id", "workspace")


def _notebook_id(request: Request) -> uuid.UUID:
    return path_uuid(request, "notebook_id", "notebook")


async def get_workspace(request: Request) -> Response:
    workspace_id = _workspace_id(request)
    principal = await require_workspace(request, workspace_id, Role.VIEWER)
    row = await services_of(request).catalog.get_workspace(workspace_id)
    return JSONResponse({**row, "role": principal.role.label})


async def update_workspace(request: Request) -> Response:
    workspace_id = _workspace_id(request)
    await require_workspace(request, workspace_id, Role.OWNER)
    body = await json_object(request)
    name = clean_name(body.get("name"), "name")
    return JSONResponse(await services_of(request).catalog.rename_workspace(workspace_id, name))


async def delete_workspace(request: Request) -> Response:
    workspace_id = _workspace_id(request)
    await require_workspace(request, workspace_id, Role.OWNER)
    services = services_of(request)
    for notebook_id in await services.catalog.delete_workspace(workspace_id):
        services.rooms.evict(notebook_id, "workspace deleted")
    return Response(status_code=204)


async def list_notebooks(request: Request) -> Response:
    workspace_id = _workspace_id(request)
    await require_workspace(request, workspace_id, Role.VIEWER)
    return JSONResponse(
        {"notebooks": await services_of(request).catalog.list_notebooks(workspace_id)}
    )


async def _create(
    services: Services, workspace_id: uuid.UUID, title: str, notebook: dict[str, Any]
) -> dict[str, Any]:
    notebook_id = uuid.uuid4()
    notebook.setdefault("metadata", {})["title"] = title
    seed = seed_update(notebook, notebook_id)
    return await services.catalog.create_notebook(workspace_id, notebook_id, title, seed)


async def create_notebook(request: Request) -> Response:
    workspace_id = _workspace_id(request)
    await require_workspace(request, workspace_id, Role.EDITOR)
    body = await json_object(request)
    title = clean_name(body.get("title", "Untitled"), "title")
    row = await _create(services_of(request), workspace_id, title, empty_notebook(title))
    return JSONResponse(row, status_code=201)


async def import_notebook(request: Request) -> Response:
    workspace_id = _workspace_id(request)
    await require_workspace(request, workspace_id, Role.EDITOR)
    notebook = parse_ipynb(await read_body(request, MAX_IPYNB_BYTES))
    metadata = notebook.get("metadata") or {}
    title = request.query_params.get("title") or metadata.get("title") or "Imported notebook"
    row = await _create(
        services_of(request), workspace_id, clean_name(str(title), "title"), notebook
    )
    return JSONResponse(row, status_code=201)


async def get_notebook(request: Request) -> Response:
    notebook_id = _notebook_id(request)
    principal = await require_notebook(request, notebook_id, Role.VIEWER)
    services = services_of(request)
    row = await services.catalog.get_notebook(notebook_id)
    row_workspace = uuid.UUID(str(row["workspace_id"]))
    # The workspace's name, and whether the caller may open the workspace itself (a member,
    # or a guest of a workspace link) or only this notebook (a grant, a notebook link): the
    # client's breadcrumb links to the workspace only when it opens.
    record = await services.pool.fetchrow(
        "SELECT w.name, EXISTS (SELECT 1 FROM workspace_members m"
        "   WHERE m.workspace_id = w.id AND m.user_id = $2) AS member"
        " FROM workspaces w WHERE w.id = $1",
        row_workspace,
        principal.user_id,
    )
    whole_link = principal.scope_workspace is not None and principal.scope_notebook is None
    files = await files_role(services.pool, await identify(request), row_workspace)
    return JSONResponse(
        {
            **row,
            "role": principal.role.label,
            "workspace_name": record["name"] if record else None,
            "workspace_access": bool(record and (record["member"] or whole_link)),
            "files_access": files is not None,
        }
    )


async def update_notebook(request: Request) -> Response:
    notebook_id = _notebook_id(request)
    await require_notebook(request, notebook_id, Role.EDITOR)
    services = services_of(request)
    body = await json_object(request)
    title = clean_name(body.get("title"), "title")
    row = await services.catalog.rename_notebook(notebook_id, title)
    # The title lives in the document too, so open clients see the rename live.
    async with services.rooms.use(notebook_id) as room:
        rename_document(room.doc, title)
    return JSONResponse(row)


async def delete_notebook(request: Request) -> Response:
    notebook_id = _notebook_id(request)
    await require_notebook(request, notebook_id, Role.EDITOR)
    services = services_of(request)
    await services.catalog.delete_notebook(notebook_id)
    services.rooms.evict(notebook_id, "notebook deleted")
    return Response(status_code=204)


async def export_notebook(request: Request) -> Response:
    notebook_id = _notebook_id(request)
    await require_notebook(request, notebook_id, Role.VIEWER)
    services = services_of(request)
    row = await services.catalog.get_notebook(notebook_id)
    async with services.rooms.use(notebook_id) as room:
        notebook = to_ipynb(room.doc, title=row["title"])
    filename = "".join(c if c.isalnum() or c in " -_." else "_" for c in row["title"]).strip()
    return Response(
        json.dumps(notebook, indent=1, ensure_ascii=False) + "\n",
        media_type="application/x-ipynb+json",
        headers={"Content-Disposition": f'attachment; filename="{filename or "notebook"}.ipynb"'},
    )


async def _copy_into(
    services: Services, source: uuid.UUID, workspace_id: uuid.UUID, title: str
) -> dict[str, Any]:
    async with services.rooms.use(source) as room:
        seed = copy_update(room.doc, title)
    return await services.catalog.create_notebook(workspace_id, uuid.uuid4(), title, seed)


async def copy_notebook(request: Request) -> Response:
    """Duplicate a notebook into its own workspace or another the caller can edit."""
    source = _notebook_id(request)
    await require_notebook(request, source, Role.VIEWER)
    services = services_of(request)
    body = await json_object(request)
    original = await services.catalog.get_notebook(source)
    target = optional_uuid(body.get("workspace_id"), "workspace_id") or uuid.UUID(
        original["workspace_id"]
    )
    await require_workspace(request, target, Role.EDITOR)
    title = clean_name(body.get("title", f"Copy of {original['title']}"[:200]), "title")
    row = await _copy_into(services, source, target, title)
    return JSONResponse(row, status_code=201)


async def copy_workspace(request: Request) -> Response:
    """A new workspace owned by the caller with a copy of every notebook and of the files."""
    source = _workspace_id(request)
    await require_workspace(request, source, Role.VIEWER)
    identity = await require_account(request)
    services = services_of(request)
    body = await json_object(request)
    original = await services.catalog.get_workspace(source)
    name = clean_name(body.get("name", f"Copy of {original['name']}"[:200]), "name")
    workspace = await services.catalog.create_workspace(name, identity.user_id)
    copy_id = uuid.UUID(workspace["id"])
    try:
        for notebook in await services.catalog.list_notebooks(source):
            await _copy_into(services, uuid.UUID(notebook["id"]), copy_id, notebook["title"])
        await services.extensions.workspace_copied(source, copy_id)
    except BaseException:
        # All or nothing: a half-made copy would look like a faithful one.
        await services.catalog.delete_workspace(copy_id)
        raise
    log.info(
        "workspace copied",
        extra={"user_id": str(identity.user_id), "workspace_id": str(source), "copy": str(copy_id)},
    )
    return JSONResponse(workspace, status_code=201)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/api/workspaces", list_workspaces, methods=["GET"]),
    Route("/api/workspaces", create_workspace, methods=["POST"]),
    Route("/api/workspaces/{workspace_id}", get_workspace, methods=["GET"]),
    Route("/api/workspaces/{workspace_id}", update_workspace, methods=["PATCH"]),
    Route("/api/workspaces/{workspace_id}", delete_workspace, methods=["DELETE"]),
    Route("/api/workspaces/{workspace_id}/copy", copy_workspace, methods=["POST"]),
    Route("/api/workspaces/{workspace_id}/notebooks", list_notebooks, methods=["GET"]),
    Route("/api/workspaces/{workspace_id}/notebooks", create_notebook, methods=["POST"]),
    Route("/api/workspaces/{workspace_id}/notebooks/import", import_notebook, methods=["POST"]),
    Route("/api/notebooks/{notebook_id}", get_notebook, methods=["GET"]),
    Route("/api/notebooks/{notebook_id}", update_notebook, methods=["PATCH"]),
    Route("/api/notebooks/{notebook_id}", delete_notebook, methods=["DELETE"]),
    Route("/api/notebooks/{notebook_id}/export", export_notebook, methods=["GET"]),
    Route("/api/notebooks/{notebook_id}/copy", copy_notebook, methods=["POST"]),
]
