"""How parts outside collab (the executor, the assistant) plug into the server.

collab knows nothing of them: an extension is found through the ``weft.extensions`` entry
point group, adds routes, and runs a lifespan of its own inside the server's, with access
to collab's services (the pool, the rooms and, through ``collab.sync.peers``, the documents).

>>> class Executor:
...     name = "executor"
...     def routes(self) -> list[BaseRoute]: ...
...     def lifespan(self, services: Services) -> AbstractAsyncContextManager[None]: ...
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from importlib.metadata import entry_points
from typing import Protocol

from starlette.routing import BaseRoute

from collab.services.container import Services
from collab.settings import Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "weft.extensions"


class Extension(Protocol):
    name: str

    def routes(self) -> Sequence[BaseRoute]: ...

    def lifespan(self, services: Services) -> AbstractAsyncContextManager[None]: ...


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
