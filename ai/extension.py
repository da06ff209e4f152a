"""The assistant as a server extension (entry point ``weft.extensions: ai``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from starlette.routing import BaseRoute

from ai import routes
from ai.service import Assistant
from ai.settings import AssistantSettings
from collab.services.container import Services
from collab.services.extensions import Extension, Running
from collab.settings import Settings


class AssistantExtension(Extension):
    name = "ai"

    def __init__(self, settings: Settings) -> None:
        self.settings = AssistantSettings.from_env()
        self.assistant = Running[Assistant]("assistant")

    def routes(self) -> Sequence[BaseRoute]:
        return routes.routes(self.assistant)

    @contextlib.asynccontextmanager
    async def lifespan(self, services: Services) -> AsyncIterator[None]:
        async with Assistant(self.settings, services).running() as assistant:
            with self.assistant.serving(assistant):
                yield
