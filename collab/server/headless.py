"""Run server extensions without the HTTP server (``weft executor``): the same services
(pool, rooms, document feed) and the extension's lifespan, until SIGINT or SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import signal
from importlib.metadata import entry_points

import anyio

from collab.services.container import open_services
from collab.services.extensions import ENTRY_POINT_GROUP, Extension
from collab.settings import Settings

log = logging.getLogger(__name__)


def load_extension(name: str, settings: Settings) -> Extension:
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name == name:
            extension: Extension = point.load()(settings)
            return extension
    raise LookupError(f"no extension named {name!r} is installed (pip install -e .)")


async def run_headless(settings: Settings, extension: Extension) -> None:
    async with (
        open_services(settings, [extension]) as services,
        contextlib.AsyncExitStack() as stack,
    ):
        await stack.enter_async_context(extension.lifespan(services))
        log.info("worker ready", extra={"extension": extension.name})
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("worker stopping", extra={"signal": int(signum)})
                break
