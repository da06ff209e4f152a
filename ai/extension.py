"""The assistant as a server extension (entry point ``weft.extensions: ai``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from starlette.routing import BaseRoute

from ai import routes
from ai.service import Assistant
from ai.settings import AssistantSettings
from collab.services.container import Services
from collab.settings import Settings


class AssistantExtension:
    name = "ai"

    def __init__(self, settings: Settings) -> None:
        self.settings = AssistantSettings.from_env()
        self.assistant: Assistant | None = None

    def routes(self) -> Sequence[BaseRoute]:
        return routes.routes()

    @contextlib.asynccontextmanager
    async def lifespan(self, services: Services) -> AsyncIterator[None]:
        async with Assistant(self.settings, services).running() as assistant:
            self.assistant = assistant
            services.extras["assistant"] = assistant
            yield
