"""REST endpoints of the assistant (see docs/api.md, "Assistant")."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from ai.service import MODES, Assistant, Generation
from ai.service import Request as AssistRequest
from ai.settings import HOW_TO_CONFIGURE
from ai.shared import SharedGeneration
from collab.api.http import json_object, path_uuid
from collab.auth.access import Role, identify, require_notebook
from collab.errors import BadRequest, Forbidden, NotFound, Unavailable
from collab.services.extensions import Running

MAX_BODY_BYTES = 64 * 1024
MAX_INSTRUCTION_CHARS = 4000


def _selection(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest('\'selection\' must be an object {"from": int, "to": int}')
    offsets = [value.get("from"), value.get("to", value.get("from"))]
    points = [v for v in offsets if isinstance(v, int) and not isinstance(v, bool) and v >= 0]
    if len(points) != 2:
        raise BadRequest("'selection.from' and 'selection.to' must be offsets >= 0")
    return (min(points), max(points))


async def assist(assistant: Assistant, request: Request) -> Response:
    notebook_id = path_uuid(request, "notebook_id", "notebook")
    principal = await require_notebook(request, notebook_id, Role.EDITOR)
    if not assistant.settings.configured:
        raise Unavailable(HOW_TO_CONFIGURE)
    body = await json_object(request, MAX_BODY_BYTES)
    mode = body.get("mode", "generate")
    if mode not in MODES:
        raise BadRequest(f"'mode' must be one of {', '.join(MODES)}")
    instruction = body.get("instruction", "")
    if not isinstance(instruction, str):
        raise BadRequest("'instruction' must be a string")
    instruction = instruction.strip()
    if not instruction and mode != "fix":
        raise BadRequest("'instruction' is required: say what the code should do")
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        raise BadRequest(f"'instruction' is longer than {MAX_INSTRUCTION_CHARS} characters")
    resolve = body.get("resolve_pending", "accept")
    if resolve not in ("accept", "reject"):
        raise BadRequest("'resolve_pending' must be 'accept' or 'reject'")
    await assistant.services.catalog.get_notebook(notebook_id)  # 404 for a deleted notebook
    generation = await assistant.start(
        AssistRequest(
            notebook_id=notebook_id,
            cell_id=request.path_params["cell_id"],
            mode=mode,
            instruction=instruction,
            selection=_selection(body.get("selection")),
            resolve_pending=resolve,
        ),
        principal,
    )
    return JSONResponse(
        {"generation_id": str(generation.id), "state": generation.state}, status_code=202
    )


async def _generation(
    assistant: Assistant, request: Request, minimum: Role
) -> tuple[Generation | SharedGeneration, bool]:
    """The generation (running here, or the row of one another server runs), after the
    caller's access to its notebook is checked; and whether the caller asked for it."""
    generation_id = path_uuid(request, "generation_id", "generation")
    await identify(request)  # signed out: 401 before anything is looked up
    found: Generation | SharedGeneration | None = assistant.generations.get(generation_id)
    if found is None:
        found = await assistant.shared.get(generation_id)
    if found is None:
        raise NotFound(f"no generation {generation_id} (finished ones are kept for a while)")
    if isinstance(found, Generation):
        notebook_id, requester_id = found.request.notebook_id, found.requester.user_id
    else:
        notebook_id, requester_id = found.notebook_id, found.requester_id
    principal = await require_notebook(request, notebook_id, minimum)
    return found, principal.user_id == requester_id


async def get_generation(assistant: Assistant, request: Request) -> Response:
    found, _ = await _generation(assistant, request, Role.VIEWER)
    return JSONResponse(found.public() if isinstance(found, Generation) else found.public)


async def _act(assistant: Assistant, request: Request, action: str) -> Response:
    """Accept, reject or cancel the requester's generation, wherever it runs."""
    found, own = await _generation(assistant, request, Role.EDITOR)
    if not own:
        name = (
            found.requester.name
            if isinstance(found, Generation)
            else found.public["requested_by"]["name"]
        )
        raise Forbidden(f"only {name}, who asked for it, may do that")
    if isinstance(found, SharedGeneration):
        return JSONResponse(await assistant.act_remotely(found, action))
    await assistant.act(found, action)
    return JSONResponse(found.public())


async def accept(assistant: Assistant, request: Request) -> Response:
    return await _act(assistant, request, "accept")


async def reject(assistant: Assistant, request: Request) -> Response:
    return await _act(assistant, request, "reject")


async def cancel(assistant: Assistant, request: Request) -> Response:
    return await _act(assistant, request, "cancel")


def routes(assistant: Running[Assistant]) -> list[BaseRoute]:
    """The routes, bound to the assistant they call (collab.services.extensions.Running)."""
    return [
        assistant.route("/api/notebooks/{notebook_id}/cells/{cell_id}/assist", assist, "POST"),
        assistant.route("/api/generations/{generation_id}", get_generation, "GET"),
        assistant.route("/api/generations/{generation_id}/accept", accept, "POST"),
        assistant.route("/api/generations/{generation_id}/reject", reject, "POST"),
        assistant.route("/api/generations/{generation_id}/cancel", cancel, "POST"),
    ]
