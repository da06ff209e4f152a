"""REST endpoints for kernel requests: completions, signatures, frame pages (see
executor.cell_requests for what each may ask and how it is bounded)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from collab.api.http import json_object, path_uuid
from collab.auth.access import Role, require_notebook
from executor.cell_requests import CellRequests
from executor.service import Executor

_BODY_BYTES = 512 * 1024  # the code before the cursor, as JSON, with room to spare


def _requests(request: Request) -> CellRequests:
    extras = request.app.state.services.extras
    if "cell_requests" not in extras:
        executor: Executor = extras["executor"]
        extras["cell_requests"] = CellRequests(executor)
    requests: CellRequests = extras["cell_requests"]
    return requests


async def _complete(request: Request, kind: str) -> Response:
    notebook_id = path_uuid(request, "notebook_id", "notebook")
    principal = await require_notebook(request, notebook_id, Role.EDITOR)
    body = await json_object(request, _BODY_BYTES)
    answer = await _requests(request).complete(
        notebook_id, request.path_params["cell_id"], principal.user_id, kind, body
    )
    return JSONResponse(answer)


async def complete(request: Request) -> Response:
    return await _complete(request, "complete")


async def signature(request: Request) -> Response:
    return await _complete(request, "signature")


async def frame_page(request: Request) -> Response:
    notebook_id = path_uuid(request, "notebook_id", "notebook")
    principal = await require_notebook(request, notebook_id, Role.VIEWER)
    body = await json_object(request, 16 * 1024)
    answer = await _requests(request).frame_page(
        notebook_id, request.path_params["cell_id"], principal.user_id, principal.name, body
    )
    return JSONResponse(answer)


def routes() -> list[BaseRoute]:
    cell = "/api/notebooks/{notebook_id}/cells/{cell_id}"
    return [
        Route(f"{cell}/complete", complete, methods=["POST"]),
        Route(f"{cell}/signature", signature, methods=["POST"]),
        Route(f"{cell}/frame", frame_page, methods=["POST"]),
    ]
