"""Generations as every server sees them: a row each in PostgreSQL, and a channel to ask
the server running one to accept, reject or cancel it.

A generation runs on the server that started it: it streams into the cell and tracks its
text there, in memory. A cluster sends requests to any server, so every state change is
also written to ``assistant_generations``; a request for a generation another server runs
reads the row, and an action on it goes by ``NOTIFY weft_assist`` to that server, while the
server that took the request waits for the row to show the outcome.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg

from collab.storage.database import DATABASE_ERRORS

log = logging.getLogger(__name__)

CHANNEL = "weft_assist"
ACTIVE = ("streaming", "pending")
# The server running a generation rewrites its row at least this often...
HEARTBEAT_S = 15.0
# ...so an active row older than this belongs to a server that is gone.
STALE_S = 60.0
_POLL_S = 0.05


@dataclass(frozen=True)
class SharedGeneration:
    """A generation's row: what any server knows of it."""

    id: uuid.UUID
    notebook_id: uuid.UUID
    cell_id: str
    node: str
    requester_id: uuid.UUID
    state: str
    public: dict[str, Any]


def _shared(record: asyncpg.Record) -> SharedGeneration:
    return SharedGeneration(
        id=record["id"],
        notebook_id=record["notebook_id"],
        cell_id=record["cell_id"],
        node=record["node"],
        requester_id=record["requester"],
        state=record["state"],
        public=json.loads(record["public"]),
    )


class SharedGenerations:
    """
    >>> shared = SharedGenerations(pool, node=store.node)
    >>> await shared.save(row)                       # on every state change
    >>> await shared.ask(other_servers_row, "accept")
    """

    def __init__(self, pool: asyncpg.Pool, node: str) -> None:
        self._pool = pool
        self.node = node

    async def save(self, row: SharedGeneration, version: int) -> None:
        await self._pool.execute(
            "INSERT INTO assistant_generations"
            " (id, notebook_id, cell_id, node, requester, state, public, version)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)"
            " ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, public = EXCLUDED.public,"
            " version = EXCLUDED.version, updated_at = now()"
            " WHERE assistant_generations.version < EXCLUDED.version",
            row.id,
            row.notebook_id,
            row.cell_id,
            row.node,
            row.requester_id,
            row.state,
            json.dumps(row.public),
            version,
        )

    async def touch(self, ids: list[uuid.UUID]) -> None:
        """Still running here (the heartbeat of active generations)."""
        if ids:
            await self._pool.execute(
                "UPDATE assistant_generations SET updated_at = now() WHERE id = ANY($1::uuid[])",
                ids,
            )

    async def forget(self, older_than_s: float) -> None:
        await self._pool.execute(
            "DELETE FROM assistant_generations"
            " WHERE updated_at < now() - make_interval(secs => $1)",
            older_than_s,
        )

    async def get(self, generation_id: uuid.UUID) -> SharedGeneration | None:
        record = await self._pool.fetchrow(
            "SELECT * FROM assistant_generations WHERE id = $1", generation_id
        )
        return None if record is None else _shared(record)

    async def busy(self, notebook_id: uuid.UUID, cell_id: str) -> SharedGeneration | None:
        """An active generation in the cell on another server that is still alive."""
        record = await self._pool.fetchrow(
            "SELECT * FROM assistant_generations"
            " WHERE notebook_id = $1 AND cell_id = $2 AND state IN ('streaming', 'pending')"
            " AND node <> $3 AND updated_at > now() - make_interval(secs => $4)"
            " ORDER BY updated_at DESC LIMIT 1",
            notebook_id,
            cell_id,
            self.node,
            STALE_S,
        )
        return None if record is None else _shared(record)

    async def ask(self, row: SharedGeneration, action: str) -> None:
        await self._pool.execute(
            "SELECT pg_notify($1, $2)", CHANNEL, f"{row.node}:{row.id}:{action}"
        )

    async def wait_for(
        self, generation_id: uuid.UUID, done: Callable[[str], bool]
    ) -> SharedGeneration:
        """The row once ``done(state)`` (bound the wait with a cancel scope)."""
        while True:
            row = await self.get(generation_id)
            if row is not None and done(row.state):
                return row
            await anyio.sleep(_POLL_S)

    @contextlib.asynccontextmanager
    async def listening(self, on_action: Callable[[uuid.UUID, str], None]) -> AsyncIterator[None]:
        """Call ``on_action(generation_id, action)`` for every action asked of this server."""

        # A coroutine: asyncpg runs it as a task, where anyio works (a plain callback runs
        # outside any task, where on_action could not start one).
        async def notified(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            node, _, rest = payload.partition(":")
            generation, _, action = rest.partition(":")
            if node != self.node:
                return
            try:
                on_action(uuid.UUID(generation), action)
            except ValueError:
                log.warning("assistant: malformed action %r", payload)

        conn = await self._pool.acquire()
        try:
            await conn.add_listener(CHANNEL, notified)
            yield
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(*DATABASE_ERRORS):
                    await conn.remove_listener(CHANNEL, notified)
                await self._pool.release(conn)
