"""The executor as a server extension (entry point ``weft.extensions: executor``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from starlette.routing import BaseRoute

from collab.services import Services
from collab.settings import Settings
from executor import routes
from executor.config import ExecutorSettings
from executor.service import Executor


class ExecutorExtension:
    name = "executor"

    def __init__(self, settings: Settings) -> None:
        self.settings = ExecutorSettings.from_env(settings)
        self.executor: Executor | None = None

    def routes(self) -> Sequence[BaseRoute]:
        return routes.routes()

    @contextlib.asynccontextmanager
    async def lifespan(self, services: Services) -> AsyncIterator[None]:
        async with Executor(self.settings, services).running() as executor:
            self.executor = executor
            services.extras["executor"] = executor
            yield
