"""The executor as a server extension (entry point ``weft.extensions: executor``)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence

import anyio
from starlette.routing import BaseRoute

from collab.services.container import Services
from collab.settings import Settings
from executor import routes
from executor.config import ExecutorSettings
from executor.service import Executor


class ExecutorExtension:
    name = "executor"

    def __init__(self, settings: Settings, *, worker: bool | None = None) -> None:
        self.settings = ExecutorSettings.from_env(settings)
        # WEFT_EXECUTOR=off: this server only queues runs; `weft executor` workers run them.
        self.worker = self.settings.in_process if worker is None else worker
        self.executor: Executor | None = None

    def routes(self) -> Sequence[BaseRoute]:
        return routes.routes()

    @contextlib.asynccontextmanager
    async def lifespan(self, services: Services) -> AsyncIterator[None]:
        async with Executor(self.settings, services).running(worker=self.worker) as executor:
            self.executor = executor
            services.extras["executor"] = executor
            services.offered.workspace_files = executor.files

            async def copy_files(source: uuid.UUID, copy: uuid.UUID) -> None:
                await anyio.to_thread.run_sync(executor.files.copy_workspace, source, copy)

            services.workspace_copied.append(copy_files)
            yield
