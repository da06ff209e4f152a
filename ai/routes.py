"""REST endpoints of the assistant (see docs/api.md, "Assistant")."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ai.service import MODES, Assistant, Generation
from ai.service import Request as AssistRequest
from ai.settings import HOW_TO_CONFIGURE
from collab.access import Role, identify, require_notebook
from collab.errors import BadRequest, Conflict, Forbidden, NotFound, Unavailable
from collab.http import json_object, path_uuid

MAX_BODY_BYTES = 64 * 1024
MAX_INSTRUCTION_CHARS = 4000


def _assistant(request: Request) -> Assistant:
    assistant: Assistant = request.app.state.services.extras["assistant"]
    return assistant


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


async def assist(request: Request) -> Response:
    notebook_id = path_uuid(request, "notebook_id", "notebook")
    principal = await require_notebook(request, notebook_id, Role.EDITOR)
    assistant = _assistant(request)
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


async def _generation(request: Request, minimum: Role) -> tuple[Generation, bool]:
    """The generation, after the caller's access to its notebook is checked; and whether
    the caller is the one who asked for it."""
    generation_id = path_uuid(request, "generation_id", "generation")
    await identify(request)  # signed out: 401 before anything is looked up
    generation = _assistant(request).generations.get(generation_id)
    if generation is None:
        raise NotFound(f"no generation {generation_id} (finished ones are kept for a while)")
    principal = await require_notebook(request, generation.request.notebook_id, minimum)
    return generation, principal.user_id == generation.requester.user_id


async def get_generation(request: Request) -> Response:
    generation, _ = await _generation(request, Role.VIEWER)
    return JSONResponse(generation.public())


async def _own(request: Request) -> Generation:
    generation, own = await _generation(request, Role.EDITOR)
    if not own:
        raise Forbidden(f"only {generation.requester.name}, who asked for it, may do that")
    return generation


async def _resolve(request: Request, action: str) -> Response:
    """Accept or reject the requester's suggestion (stopping its stream first); asking
    again for what was already done is fine."""
    generation = await _own(request)
    assistant = _assistant(request)
    await assistant.stop_streaming(generation)
    if generation.state == "pending":
        if action == "accept":
            assistant.accept(generation)
        else:
            assistant.reject(generation)
    elif generation.state != f"{action}ed":
        raise Conflict(f"cannot {action}: the generation is already {generation.state}")
    return JSONResponse(generation.public())


async def accept(request: Request) -> Response:
    return await _resolve(request, "accept")


async def reject(request: Request) -> Response:
    return await _resolve(request, "reject")


async def cancel(request: Request) -> Response:
    generation = await _own(request)
    await _assistant(request).stop_streaming(generation)
    return JSONResponse(generation.public())


def routes() -> list[BaseRoute]:
    return [
        Route("/api/notebooks/{notebook_id}/cells/{cell_id}/assist", assist, methods=["POST"]),
        Route("/api/generations/{generation_id}", get_generation, methods=["GET"]),
        Route("/api/generations/{generation_id}/accept", accept, methods=["POST"]),
        Route("/api/generations/{generation_id}/reject", reject, methods=["POST"]),
        Route("/api/generations/{generation_id}/cancel", cancel, methods=["POST"]),
    ]
