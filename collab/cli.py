"""The ``weft`` command: ``weft serve`` starts the whole server on its embedded defaults."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

import anyio
import uvicorn

from collab.app import create_app
from collab.headless import load_extension, run_headless
from collab.logs import configure_logging
from collab.settings import Settings, SettingsError

log = logging.getLogger(__name__)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    settings = dataclasses.replace(
        settings,
        host=args.host or settings.host,
        port=args.port if args.port is not None else settings.port,
    )
    configure_logging(settings.log_level)
    app = create_app(settings)
    log.info("listening", extra={"host": settings.host, "port": settings.port})
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        # Our own limit answers with 1009 and a reason; uvicorn's only backstops it.
        ws_max_size=settings.max_frame_bytes + 64 * 1024,
        # Yjs frames are small and frequent: compressing each costs more than it saves.
        ws_per_message_deflate=False,
        lifespan="on",
    )
    return 0


def _executor(args: argparse.Namespace, settings: Settings) -> int:
    """An executor worker: claims runs from the shared queue and hosts their kernels."""
    configure_logging(settings.log_level)
    # This process exists to run cells, whatever WEFT_EXECUTOR says for the servers.
    os.environ["WEFT_EXECUTOR"] = "on"
    extension = load_extension("executor", settings)
    anyio.run(run_headless, settings, extension)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="weft", description="Live, shared notebooks.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the server (embedded PostgreSQL by default)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1, or WEFT_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000, or WEFT_PORT)")
    serve.set_defaults(func=_serve)
    worker = commands.add_parser(
        "executor", help="run an executor worker (DATABASE_URL, DOCKER_HOST) with no HTTP server"
    )
    worker.set_defaults(func=_executor)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"weft: {exc}", file=sys.stderr)
        return 2
    result: int = args.func(args, settings)
    return result


if __name__ == "__main__":
    sys.exit(main())
