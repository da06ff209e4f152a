"""The executor as a server extension (entry point ``weft.extensions: executor``)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence

import anyio
from starlette.routing import BaseRoute

from collab.services.container import Services
from collab.services.extensions import Extension, Running, WorkspaceFiles
from collab.settings import Settings
from executor import request_routes, routes
from executor.cell_requests import CellRequests
from executor.config import ExecutorSettings
from executor.service import Executor


class ExecutorExtension(Extension):
    name = "executor"

    def __init__(self, settings: Settings, *, worker: bool | None = None) -> None:
        self.settings = ExecutorSettings.from_env(settings)
        # WEFT_EXECUTOR=off: this server only queues runs; `weft executor` workers run them.
        self.worker = self.settings.in_process if worker is None else worker
        self.executor = Running[Executor]("executor")
        self.cell_requests = Running[CellRequests]("kernel request service")

    def routes(self) -> Sequence[BaseRoute]:
        return [*routes.routes(self.executor), *request_routes.routes(self.cell_requests)]

    @contextlib.asynccontextmanager
    async def lifespan(self, services: Services) -> AsyncIterator[None]:
        async with Executor(self.settings, services).running(worker=self.worker) as executor:
            # Inside: the routes stop reaching the executor before it stops.
            with (
                self.executor.serving(executor),
                self.cell_requests.serving(CellRequests(executor)),
            ):
                yield

    async def workspace_copied(self, source: uuid.UUID, copy: uuid.UUID) -> None:
        """The copy gets the workspace's files too."""
        files = self.executor.get().files
        await anyio.to_thread.run_sync(files.copy_workspace, source, copy)

    def workspace_files(self) -> WorkspaceFiles | None:
        executor = self.executor.current
        return None if executor is None else executor.files
