"""The ASGI application: ``create_app(settings)`` and the lifespan that owns every resource."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import asyncpg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from collab.api import accounts, notebooks, search, sharing
from collab.app_services import keep_services
from collab.errors import WeftError
from collab.metrics import metrics_endpoint
from collab.server.security_headers import SecurityHeaders
from collab.services.container import open_services
from collab.services.extensions import Extension, discover
from collab.settings import Settings
from collab.sync.websocket import sync_endpoint

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _weft_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WeftError)
    return error_response(exc.status, exc.code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


async def _database_error(request: Request, exc: Exception) -> Response:
    log.error("database error", extra={"path": request.url.path, "error": str(exc)})
    return error_response(503, "unavailable", "storage is unavailable; retry later")


class WebFiles(StaticFiles):
    """The web client; a page path it has no file for (a deep link such as /notebooks/{id})
    gets index.html, so the client's router shows that page. API and asset misses stay 404.
    Hashed build assets are cached for good; everything else is revalidated on each load."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:
            page = not path.startswith(("api/", "ws/")) and "." not in path.rsplit("/", 1)[-1]
            if exc.status_code != 404 or scope["method"] not in ("GET", "HEAD") or not page:
                raise
            response = await super().get_response("index.html", scope)
        immutable = path.startswith("assets/") and response.status_code == 200
        response.headers["Cache-Control"] = (
            "public, max-age=31536000, immutable" if immutable else "no-cache"
        )
        return response


def create_app(settings: Settings, extensions: Sequence[Extension] | None = None) -> Starlette:
    """The Weft server. Nothing starts until the lifespan runs.

    ``extensions`` default to every installed one (entry points); pass ``()`` for collab alone.

    >>> app = create_app(Settings.from_env())
    >>> uvicorn.run(app)
    """
    if extensions is None:
        extensions = discover(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with (
            open_services(settings, extensions) as services,
            contextlib.AsyncExitStack() as stack,
        ):
            keep_services(app, services)
            for extension in extensions:
                await stack.enter_async_context(extension.lifespan(services))
            log.info("server ready", extra={"state_dir": str(settings.state_dir)})
            yield
        log.info("server stopped")

    routes: list[BaseRoute] = [
        *notebooks.routes,
        *search.routes(),
        *accounts.routes,
        *sharing.routes,
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        WebSocketRoute("/ws/{notebook_id}", sync_endpoint),
    ]
    for extension in extensions:
        routes.extend(extension.routes())
    if settings.web_dir is not None and settings.web_dir.is_dir():
        routes.append(Mount("/", WebFiles(directory=settings.web_dir, html=True), name="web"))
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        # CSP, nosniff, Referrer-Policy on every response (docs/security.md).
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={
            WeftError: _weft_error,
            HTTPException: _http_error,
            asyncpg.PostgresConnectionError: _database_error,
            asyncpg.InterfaceError: _database_error,
            ConnectionError: _database_error,
        },
    )
