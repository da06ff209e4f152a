"""The extension interface: how parts outside collab (the executor, the assistant) plug
into the server.

collab knows nothing of them: an extension is found through the ``weft.extensions`` entry
point group, returns routes bound to its own service, runs a lifespan of its own inside the
server's (with collab's services: the pool, the rooms and, through ``collab.sync.peers``,
the documents), and overrides the hooks it needs (each a no-op here), as hocuspocus's
extensions and marimo's session extensions do. Hooks about rooms (loaded, persisted,
unloaded) are ``collab.sync.hooks.RoomHooks``: register them with
``services.rooms.hooks.add(...)`` in the lifespan.

>>> class Sweeper(Extension):
...     name = "sweeper"
...     def __init__(self, settings: Settings) -> None:
...         self.service = Running[SweepService]("sweeper")
...     def routes(self) -> Sequence[BaseRoute]:
...         return [self.service.route("/api/sweep", sweep, "POST")]
...     @contextlib.asynccontextmanager
...     async def lifespan(self, services: Services) -> AsyncIterator[None]:
...         async with SweepService(services) as service, self.service.serving(service):
...             yield
...     async def workspace_copied(self, source: uuid.UUID, copy: uuid.UUID) -> None:
...         ...
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from collab.errors import Unavailable
from collab.settings import Settings

if TYPE_CHECKING:
    from collab.services.container import Services

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "weft.extensions"

S = TypeVar("S")


class WorkspaceFiles(Protocol):
    """A workspace's file store as other extensions may read it (the executor owns it)."""

    def list(
        self, workspace_id: uuid.UUID, relative: str = "", schema: bool = False
    ) -> list[dict[str, Any]]: ...


class Extension:
    """A part of the server outside collab. Override what you need."""

    name: ClassVar[str]

    def routes(self) -> Sequence[BaseRoute]:
        """The routes this extension serves; built once, before the lifespan runs (bind
        them to the extension's service with ``Running.bind``)."""
        return ()

    def lifespan(self, services: Services) -> AbstractAsyncContextManager[None]:
        """Runs inside the server's lifespan, after collab's services are open."""
        return contextlib.nullcontext()

    async def workspace_copied(self, source: uuid.UUID, copy: uuid.UUID) -> None:
        """``source`` was copied into the new workspace ``copy`` (its notebooks already
        are): copy what this extension keeps for it. Raising undoes the whole copy."""

    def workspace_files(self) -> WorkspaceFiles | None:
        """The workspaces' file store, if this extension keeps it: so the assistant reads
        the files without importing the executor (collab itself never reads it)."""
        return None


class Extensions:
    """The running server's extensions: a hook called here runs on each in turn, in the
    order the server was given them (``discover``: by name)."""

    def __init__(self, extensions: Iterable[Extension] = ()) -> None:
        self.all = tuple(extensions)

    async def workspace_copied(self, source: uuid.UUID, copy: uuid.UUID) -> None:
        for extension in self.all:
            await extension.workspace_copied(source, copy)

    def workspace_files(self) -> WorkspaceFiles | None:
        """The first file store an extension offers, or None."""
        return next((f for e in self.all if (f := e.workspace_files()) is not None), None)


class Running(Generic[S]):
    """An extension's own service while its lifespan runs. Routes are built before the
    service exists; ``bind`` makes a handler that takes the service as its first argument
    into an endpoint, so no handler looks its service up in the app.

    >>> executor = Running[Executor]("executor")
    >>> executor.route("/api/runs/{run_id}", get_run, "GET")  # get_run(executor, request)
    >>> with executor.serving(Executor(settings, services)):
    ...     ...
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._service: S | None = None

    def get(self) -> S:
        if self._service is None:
            raise Unavailable(f"the {self.name} is not running (starting or stopping); retry")
        return self._service

    @property
    def current(self) -> S | None:
        """The service, or None while it is not running."""
        return self._service

    @contextlib.contextmanager
    def serving(self, service: S) -> Iterator[S]:
        self._service = service
        try:
            yield service
        finally:
            self._service = None

    def bind(
        self, handler: Callable[[S, Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await handler(self.get(), request)

        endpoint.__name__ = endpoint.__qualname__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        return endpoint

    def route(
        self, path: str, handler: Callable[[S, Request], Awaitable[Response]], method: str
    ) -> Route:
        """``Route(path, self.bind(handler), methods=[method])``."""
        return Route(path, self.bind(handler), methods=[method])


class ExtensionFactory(Protocol):
    def __call__(self, settings: Settings) -> Extension: ...


def discover(settings: Settings) -> list[Extension]:
    """Every installed extension, built with the server's settings, in name order."""
    found = []
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        factory: ExtensionFactory = point.load()
        found.append(factory(settings))
        log.info("extension loaded", extra={"extension": point.name})
    return found
