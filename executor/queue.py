"""The run queue in PostgreSQL: commits are rows; workers claim them with SKIP LOCKED."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

NOTIFY_CHANNEL = "weft_runs"
# Interrupts and restarts travel to the worker holding the notebook's kernel.
CONTROL_CHANNEL = "weft_run_control"

# One notebook's runs happen one at a time, in order. The per-notebook advisory lock keeps
# two workers from claiming two runs of one notebook at the same moment.
_CLAIM = """
WITH candidate AS (
    SELECT r.id, r.notebook_id FROM runs r
    WHERE r.state = 'queued'
      AND NOT EXISTS (SELECT 1 FROM runs b WHERE b.notebook_id = r.notebook_id
                      AND b.state = 'running')
      AND NOT EXISTS (SELECT 1 FROM runs e WHERE e.notebook_id = r.notebook_id
                      AND e.state = 'queued' AND e.seq < r.seq)
      AND r.notebook_id <> ALL($3::uuid[])
    ORDER BY r.seq
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE runs SET state = 'running', claimed_by = $1, started_at = now(),
                lease_until = now() + make_interval(secs => $2)
FROM candidate
JOIN notebooks n ON n.id = candidate.notebook_id
LEFT JOIN workspace_executor_settings s ON s.workspace_id = n.workspace_id
WHERE runs.id = candidate.id
  AND pg_try_advisory_xact_lock(hashtextextended(candidate.notebook_id::text, 7))
  AND NOT EXISTS (SELECT 1 FROM runs b WHERE b.notebook_id = candidate.notebook_id
                  AND b.state = 'running')
RETURNING runs.*, n.workspace_id, coalesce(s.network, false) AS network_allowed
"""
# The claim also reads the run's workspace and whether its kernels may reach the network
# (one round trip instead of three on every run's critical path). Read at each claim, never
# cached: a change of the setting (Executor.set_network, on any server) holds from the
# next claim on, and KernelPool.get replaces a kernel started with the other setting.

# The rows and their NOTIFY in one statement: one round trip, and one implicit transaction
# (the notice is delivered at its commit, and not at all if the insert fails), where a
# transaction block took four (BEGIN, INSERT, NOTIFY, COMMIT). The rows are inserted in the
# order given (ORDER BY the ordinality), so their seqs, the claim order, follow it.
_REQUEST = """
WITH queued AS (
    INSERT INTO runs (id, notebook_id, cell_id, source, language, requested_by, reason,
                      requested_by_name, requested_link)
    SELECT id, $2::uuid, cell_id, source, language, $6::text, $7::text, $8::text, $9::uuid
    FROM unnest($1::uuid[], $3::text[], $4::text[], $5::text[])
         WITH ORDINALITY AS u (id, cell_id, source, language, n)
    ORDER BY n
    RETURNING 1
)
SELECT pg_notify($10, $2::text) WHERE EXISTS (SELECT 1 FROM queued)
"""


@dataclass(frozen=True, slots=True)
class Run:
    id: uuid.UUID
    notebook_id: uuid.UUID
    cell_id: str
    source: str
    language: str
    state: str
    reason: str
    requested_by: str | None  # the user id
    requested_at: datetime
    requested_by_name: str | None = None
    requested_link: uuid.UUID | None = None  # the share link a guest ran it through
    # Read with the claim (None, False: a run not claimed): its notebook's workspace, and
    # whether that workspace's kernels may reach the network, as of the claim.
    workspace_id: uuid.UUID | None = None
    network_allowed: bool = False

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> Run:
        return cls(
            id=record["id"],
            notebook_id=record["notebook_id"],
            cell_id=record["cell_id"],
            source=record["source"],
            language=record["language"],
            state=record["state"],
            reason=record["reason"],
            requested_by=record["requested_by"],
            requested_at=record["requested_at"],
            requested_by_name=record.get("requested_by_name"),
            requested_link=record.get("requested_link"),
            workspace_id=record.get("workspace_id"),
            network_allowed=bool(record.get("network_allowed")),
        )


class RunQueue:
    """Durable run requests (their state is written with executor.run_states).

    >>> [run_id] = await queue.request(notebook_id, [(cell_id, source, "python")], by=user_id)
    >>> run = await queue.claim(worker_id, lease_s=15)
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def request(
        self,
        notebook_id: uuid.UUID,
        items: list[tuple[str, str, str]],
        *,
        by: str | None,
        reason: str = "user",
        ids: list[uuid.UUID] | None = None,
        by_name: str | None = None,
        link: uuid.UUID | None = None,
    ) -> list[uuid.UUID]:
        """Queue runs of (cell_id, source, language), in order, with ``ids`` if given;
        durable when this returns. ``by`` is the user id."""
        ids = ids or [uuid.uuid4() for _ in items]
        cells, sources, languages = zip(*items, strict=True) if items else ((), (), ())
        await self._pool.execute(
            _REQUEST,
            ids,
            notebook_id,
            list(cells),
            list(sources),
            list(languages),
            by,
            reason,
            by_name,
            link,
            NOTIFY_CHANNEL,
        )
        return ids

    async def claim(
        self, worker: str, lease_s: float, busy: list[uuid.UUID] | None = None
    ) -> Run | None:
        """The oldest runnable run, now ours under a lease; None when there is none."""
        record = await self._pool.fetchrow(_CLAIM, worker, lease_s, busy or [])
        return Run.from_record(record) if record else None

    async def renew(self, worker: str, run_ids: list[uuid.UUID], lease_s: float) -> None:
        if run_ids:
            await self._pool.execute(
                "UPDATE runs SET lease_until = now() + make_interval(secs => $3)"
                " WHERE id = ANY($2::uuid[]) AND claimed_by = $1 AND state = 'running'",
                worker,
                run_ids,
                lease_s,
            )

    async def finish(
        self,
        run_id: uuid.UUID,
        state: str,
        *,
        error: str | None = None,
        outputs: list[dict[str, Any]] | None = None,
        execution_count: int | None = None,
    ) -> bool:
        """Record the end of a run we hold; False if it was no longer running (cancelled)."""
        status = await self._pool.execute(
            "UPDATE runs SET state = $2, error = $3, outputs = $4::jsonb, execution_count = $5,"
            " finished_at = now(), lease_until = NULL WHERE id = $1 AND state = 'running'",
            run_id,
            state,
            error,
            json.dumps(outputs or []),
            execution_count,
        )
        return bool(status != "UPDATE 0")

    async def mark_error(self, run_id: uuid.UUID, error: str) -> None:
        """A finished run turned out not to be what it reported (its kernel forged its end)."""
        await self._pool.execute(
            "UPDATE runs SET state = 'error', error = $2 WHERE id = $1", run_id, error
        )

    async def cancel_queued(
        self, notebook_id: uuid.UUID, by: str | None = None
    ) -> list[asyncpg.Record]:
        """Cancel the notebook's queued runs (only those ``by`` that user, if given)."""
        return list(
            await self._pool.fetch(
                "UPDATE runs SET state = 'cancelled', finished_at = now()"
                " WHERE notebook_id = $1 AND state = 'queued'"
                " AND ($2::text IS NULL OR requested_by = $2) RETURNING id, cell_id",
                notebook_id,
                by,
            )
        )

    async def expire_leases(self) -> list[asyncpg.Record]:
        """Fail runs whose worker stopped renewing: it died while they were running."""
        return list(
            await self._pool.fetch(
                "UPDATE runs SET state = 'error', finished_at = now(), lease_until = NULL,"
                " error = 'the executor running this cell stopped (crash or restart);"
                " run it again' WHERE state = 'running' AND lease_until < now()"
                " RETURNING id, notebook_id, cell_id"
            )
        )

    async def get(self, run_id: uuid.UUID) -> dict[str, Any] | None:
        record = await self._pool.fetchrow("SELECT * FROM runs WHERE id = $1", run_id)
        if record is None:
            return None
        out: dict[str, Any] = {}
        for key, value in record.items():
            if isinstance(value, uuid.UUID):
                out[key] = str(value)
            elif isinstance(value, datetime):
                out[key] = value.isoformat()
            elif key == "outputs":
                out[key] = json.loads(value) if isinstance(value, str) else value
            else:
                out[key] = value
        out.pop("seq", None)
        out.pop("claimed_by", None)
        out.pop("lease_until", None)
        out.pop("requested_link", None)  # which link a guest used is not for every viewer
        if out["started_at"] and out["finished_at"]:
            out["duration_ms"] = round(
                (record["finished_at"] - record["started_at"]).total_seconds() * 1000, 1
            )
        return out

    async def sources(self, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        """The source of each run, exactly as it was committed."""
        rows = await self._pool.fetch("SELECT id, source FROM runs WHERE id = ANY($1)", run_ids)
        return {row["id"]: row["source"] for row in rows}

    async def depth(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM runs WHERE state = 'queued'"))

    async def running_id(self, notebook_id: uuid.UUID) -> uuid.UUID | None:
        found: uuid.UUID | None = await self._pool.fetchval(
            "SELECT id FROM runs WHERE notebook_id = $1 AND state = 'running'", notebook_id
        )
        return found

    async def control(self, action: str, notebook_id: uuid.UUID, note: str = "") -> None:
        """Tell the worker holding the notebook's kernel (``note``: why, for a restart)."""
        payload = f"{action}:{notebook_id}" + (f":{note}" if note else "")
        await self._pool.execute("SELECT pg_notify($1, $2)", CONTROL_CHANNEL, payload)

    async def pending(self, notebook_id: uuid.UUID, limit: int = 1000) -> list[asyncpg.Record]:
        return list(
            await self._pool.fetch(
                "SELECT id, cell_id, state FROM runs WHERE notebook_id = $1"
                " AND state IN ('queued', 'running') ORDER BY seq LIMIT $2",
                notebook_id,
                limit,
            )
        )
