"""A run's state, written in one place: its row in PostgreSQL (``runs``, the queue) and its
record in the document (``runs[cell_id]``, what everyone sees), along the state machine of
``collab.document.schema`` (queued -> running -> done | error, queued -> cancelled | error).

Every change of a run's state goes through `RunStates`; nothing else calls ``set_run`` or
the queue's writes. The order of the two writes is part of the contract:

- a commit: the document's "queued" first and durable, then the row (a worker on another
  server must find "queued" in the log before it writes "running": see `commit`);
- an end: the document (with the cell's other writes, in one transaction), then the row;
- a cancellation or an expired lease: the row first (it says which runs), then the document.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from collab.document.schema import RunRecord, RunState, may_become, run_state
from collab.sync.peers import NotebookPeer, NotebookPeers
from executor.outputs import OutputWriter
from executor.queue import Run, RunQueue

log = logging.getLogger(__name__)


def source_hash(source: str) -> str:
    """sha256 of the UTF-8 source, first 16 hex digits (the web client's `sourceHash`)."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class Commit:
    """One cell's run to be queued: its id, the source as committed, the language."""

    run_id: uuid.UUID
    cell_id: str
    source: str
    language: str


class RunStates:
    """The one writer of run states (PostgreSQL and the document)."""

    def __init__(self, queue: RunQueue, notebooks: NotebookPeers) -> None:
        self._queue = queue
        self._notebooks = notebooks

    def write(self, notebook: NotebookPeer, cell_id: str, record: RunRecord) -> bool:
        """Set the cell's run record in the document, if the state machine allows it from
        the record there now (another run's record is simply replaced)."""
        current = notebook.run(cell_id)
        if current is not None and current.get("run_id") == record.get("run_id"):
            before, after = run_state(current.get("state")), record["state"]
            if not may_become(before, after):
                log.warning(
                    "run state not changed: %s cannot become %s",
                    before,
                    after,
                    extra={"notebook_id": str(notebook.notebook_id), "cell_id": cell_id},
                )
                return False
        notebook.set_run(cell_id, record)
        return True

    def update(self, notebook: NotebookPeer, cell_id: str, **fields: Any) -> None:
        """Change fields of the cell's current record, keeping its state (stale marks,
        previous kernel)."""
        current = notebook.run(cell_id)
        if current is not None:
            notebook.set_run(cell_id, {**current, **fields})  # type: ignore[typeddict-item]

    # -- queued -------------------------------------------------------------------------

    async def commit(
        self,
        notebook: NotebookPeer,
        commits: Sequence[Commit],
        *,
        by: str | None,
        by_name: str | None,
        reason: str,
        link: uuid.UUID | None,
    ) -> None:
        """Queue the runs: "queued" in the document, durable, then the rows (with the
        NOTIFY). If the rows cannot be inserted, the cells show an error and this raises."""
        with notebook.batch():
            for commit in commits:
                self.write(
                    notebook,
                    commit.cell_id,
                    {
                        "state": RunState.QUEUED,
                        "run_id": str(commit.run_id),
                        "source_hash": source_hash(commit.source),
                        "by": by,
                        "by_name": by_name,
                        "queued_at": now(),
                        "reason": reason,
                    },
                )
        # "queued" is in the log before any worker can claim the run: a worker's "running"
        # written without it would be a concurrent write to the same key, which the CRDT
        # may settle as "queued" for good.
        await notebook.durable()
        try:
            await self._queue.request(
                notebook.notebook_id,
                [(c.cell_id, c.source, c.language) for c in commits],
                by=by,
                reason=reason,
                ids=[c.run_id for c in commits],
                by_name=by_name,
                link=link,
            )
        except BaseException:
            with notebook.batch():
                for commit in commits:
                    self.write(
                        notebook,
                        commit.cell_id,
                        {
                            "state": RunState.ERROR,
                            "run_id": str(commit.run_id),
                            "error": "the run could not be queued; commit it again",
                            "finished_at": now(),
                        },
                    )
            raise

    # -- cancelled before they ran, lost with their executor ----------------------------

    async def cancel_queued(self, notebook_id: uuid.UUID, by: str | None = None) -> int:
        """Cancel the notebook's queued runs (only those ``by`` that user, if given)."""
        rows = await self._queue.cancel_queued(notebook_id, by=by)
        if rows:
            async with self._notebooks.open(notebook_id) as notebook:
                with notebook.batch():
                    for row in rows:
                        self._end_current(notebook, row, {"state": RunState.CANCELLED})
        return len(rows)

    async def expire_leases(self) -> list[asyncpg.Record]:
        """Fail the runs whose worker stopped renewing their lease (it died running them)."""
        rows = await self._queue.expire_leases()
        for row in rows:
            lost: RunRecord = {
                "state": RunState.ERROR,
                "error": "the executor running this cell stopped; run it again",
            }
            try:
                async with self._notebooks.open(row["notebook_id"]) as notebook:
                    self._end_current(notebook, row, lost)
            except LookupError:
                pass  # the notebook was deleted
        return rows

    def _end_current(self, notebook: NotebookPeer, row: asyncpg.Record, end: RunRecord) -> None:
        current = notebook.run(row["cell_id"])
        if current is not None and current.get("run_id") == str(row["id"]):
            self.write(notebook, row["cell_id"], {**current, **end, "finished_at": now()})

    # -- a run's life on a worker -------------------------------------------------------

    def started(self, notebook: NotebookPeer, run: Run, base: RunRecord) -> None:
        """The run is running (its row is since the claim)."""
        self.write(notebook, run.cell_id, {**base, "state": RunState.RUNNING, "started_at": now()})

    async def end(
        self,
        notebook: NotebookPeer | None,
        run: Run,
        record: RunRecord | None,
        *,
        row_error: str | None = None,
        outputs: OutputWriter | None = None,
        execution_count: int | None = None,
        with_it: Callable[[], None] | None = None,
    ) -> None:
        """The run ended (``record``'s state: done, error or cancelled): its record in the
        document, with ``with_it``'s writes in the same transaction, then its row with the
        cell's ``outputs`` (``row_error``: the row's error when it differs from the
        record's). With no notebook or no record (the notebook or the cell is gone), the
        row only, as cancelled."""
        if notebook is not None and record is not None:
            with notebook.batch():
                if with_it is not None:
                    with_it()
                self.write(notebook, run.cell_id, record)
        state = record["state"] if record is not None else RunState.CANCELLED
        error = row_error if row_error is not None else (record or {}).get("error")
        await self._queue.finish(
            run.id,
            state,
            error=error,
            outputs=outputs.outputs if outputs is not None else None,
            execution_count=execution_count,
        )

    async def failed(
        self,
        notebook: NotebookPeer,
        run: Run,
        reason: str,
        *,
        row_error: str | None,
        with_it: Callable[[], None] | None = None,
    ) -> None:
        """The run failed inside the executor: the cell, if it still shows this run, says
        ``reason`` (never "running" forever), with ``with_it``'s writes; then the row says
        ``row_error`` (None: the row is written elsewhere)."""
        current = notebook.run(run.cell_id)
        if current is not None and current.get("run_id") == str(run.id):
            with notebook.batch():
                self.write(
                    notebook,
                    run.cell_id,
                    {**current, "state": RunState.ERROR, "error": reason, "finished_at": now()},
                )
                if with_it is not None:
                    with_it()
        if row_error is not None:
            await self._queue.finish(run.id, RunState.ERROR, error=row_error)

    async def forged(
        self,
        notebook: NotebookPeer,
        run_id: str,
        cell_id: str,
        reason: str,
        with_it: Callable[[], None] | None = None,
    ) -> None:
        """A run's kernel sent a second `done` for it: the first was forged. The run failed
        (in the document, with ``with_it``'s writes, and in its row), and the names it
        reported are dropped."""
        with notebook.batch():
            current = notebook.run(cell_id)
            if current is not None and current.get("run_id") == run_id:
                self.write(
                    notebook,
                    cell_id,
                    {**current, "state": RunState.ERROR, "status": "error", "error": reason},
                )
                notebook.set_symbols(cell_id, [])
            if with_it is not None:
                with_it()
        await self._queue.mark_error(uuid.UUID(run_id), reason)
