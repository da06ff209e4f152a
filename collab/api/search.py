"""GET /api/search: full-text search over the notebooks the caller may open."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from collab.auth.access import current_principal
from collab.errors import BadRequest
from collab.search.query import DEFAULT_LIMIT, MAX_LIMIT, MAX_QUERY_CHARS, search
from collab.services.container import services_of


async def search_endpoint(request: Request) -> Response:
    principal = await current_principal(request)
    query = request.query_params.get("q", "")
    if len(query) > MAX_QUERY_CHARS:
        raise BadRequest(f"'q' must be at most {MAX_QUERY_CHARS} characters")
    raw_limit = request.query_params.get("limit", str(DEFAULT_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise BadRequest(f"'limit' must be a whole number from 1 to {MAX_LIMIT}")
    results = await search(
        services_of(request).pool,
        principal.user_id,
        query,
        int(raw_limit),
        workspace_scope=principal.scope_workspace,
        notebook_scope=principal.scope_notebook,
    )
    return JSONResponse({"query": query, "results": [r.to_json() for r in results]})


def routes() -> list[BaseRoute]:
    return [Route("/api/search", search_endpoint, methods=["GET"])]
