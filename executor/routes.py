"""REST endpoints for running cells, kernels, runs, and the workspace file store."""

from __future__ import annotations

import functools
import mimetypes
import uuid
from collections.abc import AsyncIterator
from typing import Any, BinaryIO
from urllib.parse import quote

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute

from collab.api.http import json_object, path_uuid
from collab.auth.access import (
    Principal,
    Role,
    current_principal,
    identify,
    require_files,
    require_notebook,
    require_workspace,
)
from collab.errors import BadRequest, NotFound, WeftError
from collab.services.extensions import Running
from collab.sync.peers import open_notebook
from executor.environments import EnvironmentFailure
from executor.files import FileStoreError
from executor.kernel import KernelError
from executor.service import Executor

_DOWNLOAD_CHUNK = 256 * 1024
_RUNS_LISTED = 1000  # GET /api/notebooks/{id}/runs lists at most this many


async def _notebook(request: Request, minimum: Role) -> tuple[uuid.UUID, Principal]:
    """The notebook in the path, if the caller holds ``minimum`` on it."""
    notebook_id = path_uuid(request, "notebook_id", "notebook")
    return notebook_id, await require_notebook(request, notebook_id, minimum)


async def _workspace(request: Request, minimum: Role) -> uuid.UUID:
    workspace_id = path_uuid(request, "workspace_id", "workspace")
    await require_workspace(request, workspace_id, minimum)
    return workspace_id


async def _files(request: Request, minimum: Role) -> uuid.UUID:
    """The workspace in the path, if the caller holds ``minimum`` on its files (a member,
    or someone who may edit one of its notebooks: see collab.auth.access.files_role)."""
    workspace_id = path_uuid(request, "workspace_id", "workspace")
    await require_files(request, workspace_id, minimum)
    return workspace_id


async def _by(request: Request, principal: Principal) -> dict[str, Any]:
    """Who commits: the user id (names can be changed by their owner, so they identify no
    one), the name to show, and the share link a guest came through."""
    identity = await identify(request)
    return {"by": str(principal.user_id), "by_name": principal.name, "link": identity.link_id}


async def run_cell(executor: Executor, request: Request) -> Response:
    notebook_id, principal = await _notebook(request, Role.EDITOR)
    body = await json_object(request)
    source = body.get("source")
    if source is not None and not isinstance(source, str):
        raise BadRequest("'source' must be a string")
    cell_id = request.path_params["cell_id"]
    try:
        run_ids = await executor.request(
            notebook_id, [(cell_id, source)], **await _by(request, principal)
        )
    except LookupError as exc:
        raise NotFound(str(exc)) from None
    if not run_ids:
        raise BadRequest("only code cells run")
    return JSONResponse({"run_id": str(run_ids[0])}, status_code=202)


async def _run_cells(executor: Executor, request: Request, below: str | None) -> Response:
    notebook_id, principal = await _notebook(request, Role.EDITOR)
    async with open_notebook(executor.services.rooms, notebook_id) as notebook:
        cells = notebook.cells()
    ids = [c.id for c in cells if c.cell_type == "code"]
    if below is not None:
        if below not in ids:
            raise NotFound(f"no code cell {below} in this notebook")
        ids = ids[ids.index(below) :]
    run_ids = await executor.request(
        notebook_id,
        [(i, None) for i in ids],
        **await _by(request, principal),
        reason="run-all" if below is None else "run-below",
    )
    return JSONResponse({"run_ids": [str(r) for r in run_ids]}, status_code=202)


async def run_all(executor: Executor, request: Request) -> Response:
    return await _run_cells(executor, request, None)


async def run_below(executor: Executor, request: Request) -> Response:
    return await _run_cells(executor, request, request.path_params["cell_id"])


async def run_stale(executor: Executor, request: Request) -> Response:
    """Run again, in order, every code cell marked stale or from a previous kernel."""
    notebook_id, principal = await _notebook(request, Role.EDITOR)
    async with open_notebook(executor.services.rooms, notebook_id) as notebook:
        runs = notebook.runs()
        ids = [
            c.id
            for c in notebook.cells()
            if c.cell_type == "code"
            and (runs.get(c.id) or {}).get("state") in ("done", "error", "cancelled")
            and (
                (runs.get(c.id) or {}).get("stale") or (runs.get(c.id) or {}).get("previous_kernel")
            )
        ]
    run_ids = await executor.request(
        notebook_id, [(i, None) for i in ids], **await _by(request, principal), reason="run-stale"
    )
    return JSONResponse({"run_ids": [str(r) for r in run_ids]}, status_code=202)


async def interrupt(executor: Executor, request: Request) -> Response:
    """Interrupt; ``{"kill": true}`` (offered when an interrupt did not stop the cell)
    restarts the kernel instead."""
    notebook_id, principal = await _notebook(request, Role.EDITOR)
    body = await json_object(request) if await request.body() else {}
    kill = body.get("kill", False)
    if not isinstance(kill, bool):
        raise BadRequest("'kill' must be true or false")
    if kill:
        return JSONResponse(await executor.restart(notebook_id, killed_by=principal.name))
    return JSONResponse(await executor.interrupt(notebook_id))


async def restart(executor: Executor, request: Request) -> Response:
    notebook_id, _ = await _notebook(request, Role.EDITOR)
    return JSONResponse(await executor.restart(notebook_id))


async def get_run(executor: Executor, request: Request) -> Response:
    await current_principal(request)
    run = await executor.queue.get(path_uuid(request, "run_id", "run"))
    if run is None:
        raise NotFound(f"no run {request.path_params['run_id']}")
    await require_notebook(request, uuid.UUID(str(run["notebook_id"])), Role.VIEWER)
    return JSONResponse(run)


async def list_runs(executor: Executor, request: Request) -> Response:
    notebook_id, _ = await _notebook(request, Role.VIEWER)
    limit = _RUNS_LISTED
    rows = await executor.queue.pending(notebook_id, limit + 1)
    listed = [{"id": str(r["id"]), "cell_id": r["cell_id"], "state": r["state"]} for r in rows]
    return JSONResponse({"runs": listed[:limit], "truncated": len(listed) > limit})


# -- files ----------------------------------------------------------------------------


def _file_error(exc: FileStoreError) -> WeftError:
    error = WeftError(exc.message)
    error.status = exc.status
    error.code = {
        403: "forbidden",
        404: "not_found",
        409: "conflict",
        413: "payload_too_large",
    }.get(exc.status, "bad_request")
    return error


async def list_files(executor: Executor, request: Request) -> Response:
    workspace_id = await _files(request, Role.VIEWER)
    store = executor.files
    try:
        # Off the event loop: a listing with schemas reads files, usage walks the tree.
        entries = await anyio.to_thread.run_sync(
            functools.partial(
                store.list,
                workspace_id,
                request.query_params.get("path", ""),
                schema=request.query_params.get("schema") in ("1", "true"),
            )
        )
        usage = await anyio.to_thread.run_sync(store.usage, workspace_id)
    except FileStoreError as exc:
        raise _file_error(exc) from None
    return JSONResponse({"files": entries, "usage_bytes": usage, "quota_bytes": store.quota_bytes})


async def put_file(executor: Executor, request: Request) -> Response:
    workspace_id = await _files(request, Role.EDITOR)
    declared = request.headers.get("content-length")
    try:
        written = await executor.files.write(
            workspace_id,
            request.path_params["path"],
            request.stream(),
            int(declared) if declared and declared.isdigit() else None,
        )
    except FileStoreError as exc:
        raise _file_error(exc) from None
    return JSONResponse(written, status_code=201)


async def get_file(executor: Executor, request: Request) -> Response:
    workspace_id = await _files(request, Role.VIEWER)
    relative = request.path_params["path"]
    try:
        file, size = await anyio.to_thread.run_sync(
            executor.files.open_for_read, workspace_id, relative
        )
    except FileStoreError as exc:
        raise _file_error(exc) from None
    return _download(file, size, relative.rsplit("/", 1)[-1])


def _download(file: BinaryIO, size: int, name: str) -> Response:
    """Stream the file that was opened (never a path opened again: see executor.files), at
    most the ``size`` it had when opened, as an attachment."""

    async def chunks() -> AsyncIterator[bytes]:
        left = size
        try:
            while left > 0:
                chunk = await anyio.to_thread.run_sync(file.read, min(left, _DOWNLOAD_CHUNK))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk
        finally:
            file.close()

    quoted = quote(name)
    disposition = (
        f'attachment; filename="{name}"'
        if quoted == name
        else f"attachment; filename*=utf-8''{quoted}"
    )
    return StreamingResponse(
        chunks(),
        media_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
        headers={"content-length": str(size), "content-disposition": disposition},
    )


async def delete_file(executor: Executor, request: Request) -> Response:
    workspace_id = await _files(request, Role.EDITOR)
    try:
        await anyio.to_thread.run_sync(
            executor.files.delete, workspace_id, request.path_params["path"]
        )
    except FileStoreError as exc:
        raise _file_error(exc) from None
    return Response(status_code=204)


async def make_folder(executor: Executor, request: Request) -> Response:
    workspace_id = await _files(request, Role.EDITOR)
    path = (await json_object(request)).get("path")
    if not isinstance(path, str) or not path:
        raise BadRequest("'path' must be a non-empty string")
    try:
        await anyio.to_thread.run_sync(executor.files.mkdir, workspace_id, path)
    except FileStoreError as exc:
        raise _file_error(exc) from None
    return JSONResponse({"path": path}, status_code=201)


async def move_file(executor: Executor, request: Request) -> Response:
    workspace_id = await _files(request, Role.EDITOR)
    body = await json_object(request)
    source, destination = body.get("from"), body.get("to")
    if not isinstance(source, str) or not isinstance(destination, str):
        raise BadRequest("'from' and 'to' must be strings")
    try:
        await anyio.to_thread.run_sync(executor.files.move, workspace_id, source, destination)
    except FileStoreError as exc:
        raise _file_error(exc) from None
    return JSONResponse({"from": source, "to": destination})


async def prepare_environment(executor: Executor, request: Request) -> Response:
    """Prepare the notebook's environment for its dependencies now (``{"update": true}``:
    resolve again instead of installing the recorded versions). Progress and errors appear
    in the notebook's kernel status; this answers once it is ready or has failed."""
    notebook_id, _principal = await _notebook(request, Role.EDITOR)
    body = await json_object(request)
    update = body.get("update", False)
    if not isinstance(update, bool):
        raise BadRequest("'update' must be true or false")
    try:
        await executor.prepare_environment(notebook_id, update=update)
    except EnvironmentFailure as failure:
        return JSONResponse({"ready": False, "error": failure.as_json()}, status_code=422)
    except (KernelError, RuntimeError) as exc:
        return JSONResponse({"ready": False, "error": {"message": str(exc)}}, status_code=409)
    return JSONResponse({"ready": True})


async def list_runtimes(executor: Executor, request: Request) -> Response:
    """The runtime images this server offers a notebook (``default`` first, then
    WEFT_KERNEL_IMAGES); the notebook's choice is ``meta.metadata.runtime``."""
    await _notebook(request, Role.VIEWER)
    return JSONResponse({"runtimes": executor.settings.runtimes.describe()})


async def get_executor_settings(executor: Executor, request: Request) -> Response:
    workspace_id = await _workspace(request, Role.VIEWER)
    return JSONResponse({"network": await executor.network_allowed(workspace_id)})


async def update_executor_settings(executor: Executor, request: Request) -> Response:
    workspace_id = await _workspace(request, Role.OWNER)
    network = (await json_object(request)).get("network")
    if not isinstance(network, bool):
        raise BadRequest("'network' must be true or false")
    await executor.set_network(workspace_id, network)
    return JSONResponse({"network": network})


def routes(executor: Running[Executor]) -> list[BaseRoute]:
    """The routes, bound to the executor they call (collab.services.extensions.Running)."""
    return [
        executor.route("/api/notebooks/{notebook_id}/cells/{cell_id}/run", run_cell, "POST"),
        executor.route("/api/notebooks/{notebook_id}/cells/{cell_id}/run-below", run_below, "POST"),
        executor.route("/api/notebooks/{notebook_id}/run-all", run_all, "POST"),
        executor.route("/api/notebooks/{notebook_id}/run-stale", run_stale, "POST"),
        executor.route("/api/notebooks/{notebook_id}/interrupt", interrupt, "POST"),
        executor.route("/api/notebooks/{notebook_id}/restart", restart, "POST"),
        executor.route("/api/notebooks/{notebook_id}/environment", prepare_environment, "POST"),
        executor.route("/api/notebooks/{notebook_id}/runtimes", list_runtimes, "GET"),
        executor.route("/api/notebooks/{notebook_id}/runs", list_runs, "GET"),
        executor.route("/api/runs/{run_id}", get_run, "GET"),
        executor.route("/api/workspaces/{workspace_id}/executor", get_executor_settings, "GET"),
        executor.route(
            "/api/workspaces/{workspace_id}/executor", update_executor_settings, "PATCH"
        ),
        executor.route("/api/workspaces/{workspace_id}/files", list_files, "GET"),
        executor.route("/api/workspaces/{workspace_id}/folders", make_folder, "POST"),
        executor.route("/api/workspaces/{workspace_id}/files-move", move_file, "POST"),
        executor.route("/api/workspaces/{workspace_id}/files/{path:path}", put_file, "PUT"),
        executor.route("/api/workspaces/{workspace_id}/files/{path:path}", get_file, "GET"),
        executor.route("/api/workspaces/{workspace_id}/files/{path:path}", delete_file, "DELETE"),
    ]
