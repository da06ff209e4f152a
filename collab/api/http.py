"""What every REST handler needs: path ids and bounded JSON bodies (the services:
``collab.services.container.services_of``)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.requests import Request

from collab.errors import BadRequest, NotFound, PayloadTooLarge
from collab.ids import parse_uuid

MAX_JSON_BYTES = 1024 * 1024


def path_uuid(request: Request, name: str, kind: str) -> uuid.UUID:
    value = parse_uuid(request.path_params[name])
    if value is None:
        raise NotFound(f"no {kind} {request.path_params[name]}")
    return value


async def read_body(request: Request, limit: int) -> bytes:
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


async def json_object(request: Request, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    raw = await read_body(request, limit)
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


def optional_uuid(value: object, field: str) -> uuid.UUID | None:
    if value is None:
        return None
    parsed = parse_uuid(value) if isinstance(value, str) else None
    if parsed is None:
        raise BadRequest(f"'{field}' must be an id")
    return parsed
