"""REST endpoints for kernel requests: completions, signatures, frame pages (see
executor.cell_requests for what each may ask and how it is bounded)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from collab.api.http import json_object, path_uuid
from collab.auth.access import Role, require_notebook
from collab.services.extensions import Running
from executor.cell_requests import CellRequests

_BODY_BYTES = 512 * 1024  # the code before the cursor, as JSON, with room to spare


async def _complete(requests: CellRequests, request: Request, kind: str) -> Response:
    notebook_id = path_uuid(request, "notebook_id", "notebook")
    principal = await require_notebook(request, notebook_id, Role.EDITOR)
    body = await json_object(request, _BODY_BYTES)
    answer = await requests.complete(
        notebook_id, request.path_params["cell_id"], principal.user_id, kind, body
    )
    return JSONResponse(answer)


async def complete(requests: CellRequests, request: Request) -> Response:
    return await _complete(requests, request, "complete")


async def signature(requests: CellRequests, request: Request) -> Response:
    return await _complete(requests, request, "signature")


async def frame_page(requests: CellRequests, request: Request) -> Response:
    notebook_id = path_uuid(request, "notebook_id", "notebook")
    principal = await require_notebook(request, notebook_id, Role.VIEWER)
    body = await json_object(request, 16 * 1024)
    answer = await requests.frame_page(
        notebook_id, request.path_params["cell_id"], principal.user_id, principal.name, body
    )
    return JSONResponse(answer)


def routes(requests: Running[CellRequests]) -> list[BaseRoute]:
    """The routes, bound to the executor's CellRequests (collab.services.extensions.Running)."""
    cell = "/api/notebooks/{notebook_id}/cells/{cell_id}"
    return [
        requests.route(f"{cell}/complete", complete, "POST"),
        requests.route(f"{cell}/signature", signature, "POST"),
        requests.route(f"{cell}/frame", frame_page, "POST"),
    ]
