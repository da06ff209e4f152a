"""The executor: claims committed runs from the queue, runs them in the notebook's kernel,
and writes run states, outputs and symbols into the document as a peer."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio
import asyncpg
from anyio.abc import TaskGroup
from prometheus_client import Histogram

from collab.peers import NotebookPeer, open_notebook
from collab.services import Services
from executor.analysis import names_defined, names_read, stale_cells
from executor.config import ExecutorSettings
from executor.files import FileStore
from executor.kernel import Kernel, KernelError, docker_client, remove_leftover_kernels
from executor.kernels import KernelPool
from executor.outputs import OutputWriter
from executor.queue import CONTROL_CHANNEL, NOTIFY_CHANNEL, Run, RunQueue

log = logging.getLogger(__name__)

_POLL_S = 1.0
_REAP_EVERY_S = 30.0


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Executor:
    """Owns the kernel pool and the worker loops; lives inside the server's lifespan.

    >>> async with Executor(settings, services) as executor:
    ...     run_ids = await executor.request(notebook_id, [cell_id], by="ada")
    """

    def __init__(self, settings: ExecutorSettings, services: Services) -> None:
        self.settings = settings
        self.services = services
        self.queue = RunQueue(services.pool)
        self.files = FileStore(
            settings.files_root,
            settings.file_quota_bytes,
            settings.upload_limit_bytes,
            owner_uid=settings.kernel_uid,
        )
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.kernels = KernelPool(None, settings)
        self._running: dict[uuid.UUID, Run] = {}  # notebook id -> its run in progress
        self._interrupted: set[uuid.UUID] = set()
        self._restarted: set[uuid.UUID] = set()
        self._wake = anyio.Event()
        self._controls: list[tuple[str, uuid.UUID]] = []
        self._control_wake = anyio.Event()
        self._tg: TaskGroup | None = None
        self.docker_error: str | None = None
        metrics = services.metrics
        metrics.gauge(
            "weft_kernels", "Kernel containers alive in this process", lambda: len(self.kernels)
        )
        metrics.gauge(
            "weft_runs_in_progress", "Runs this process is executing", lambda: len(self._running)
        )
        self._queue_depth = 0
        metrics.gauge(
            "weft_run_queue_depth", "Runs queued, all workers (sampled)", lambda: self._queue_depth
        )
        self._run_seconds = Histogram(
            "weft_run_seconds",
            "Commit-to-finish time of runs, by final state",
            ["state"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600),
            registry=metrics.registry,
        )

    # -- lifecycle --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self, *, worker: bool = True) -> AsyncIterator[Executor]:
        """Serve the API side always; with ``worker``, also claim runs and host kernels.

        A server started with WEFT_EXECUTOR=off queues runs and forwards interrupts and
        restarts (NOTIFY) to the workers (``weft executor``) that hold the kernels.
        """
        self.settings.files_root.mkdir(parents=True, exist_ok=True)
        if worker:
            try:
                client = await anyio.to_thread.run_sync(docker_client)
                removed = await remove_leftover_kernels(client, self.settings.instance)
                self.kernels = KernelPool(client, self.settings)
                log.info(
                    "executor ready", extra={"worker": self.worker, "leftover_kernels": removed}
                )
            except KernelError as exc:
                # The server still serves documents; runs fail with this message.
                self.docker_error = str(exc)
                log.error("executor has no Docker engine: %s", exc)
        listener = await self.services.pool.acquire()
        if worker:
            await listener.add_listener(NOTIFY_CHANNEL, self._notified)
            await listener.add_listener(CONTROL_CHANNEL, self._controlled)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if worker:
                    tg.start_soon(self._claim_loop)
                    tg.start_soon(self._lease_loop)
                    tg.start_soon(self._reap_loop)
                    tg.start_soon(self._control_loop)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.kernels.close()
                # At shutdown the database may already be gone; nothing is lost by not saying bye.
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await listener.remove_listener(NOTIFY_CHANNEL, self._notified)
                    await listener.remove_listener(CONTROL_CHANNEL, self._controlled)
                    await self.services.pool.release(listener)

    def _notified(self, *_args: Any) -> None:
        self._wake.set()

    def _controlled(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        """An interrupt or restart for a notebook, from whichever server took the request."""
        action, _, notebook = payload.partition(":")
        try:
            notebook_id = uuid.UUID(notebook)
        except ValueError:
            return
        # asyncpg calls this outside any task: hand it to the control loop.
        if action in ("interrupt", "restart"):
            self._controls.append((action, notebook_id))
            self._control_wake.set()

    async def _control_loop(self) -> None:
        while True:
            await self._control_wake.wait()
            self._control_wake = anyio.Event()
            controls, self._controls = self._controls, []
            for action, notebook_id in controls:
                await self._apply_control(action, notebook_id)

    async def _apply_control(self, action: str, notebook_id: uuid.UUID) -> None:
        if action == "interrupt":
            if notebook_id in self._running:
                # The run may still be starting its kernel: the flag stops it as soon as it
                # can, and _drive repeats SIGINT until the runner acknowledges it.
                self._interrupted.add(notebook_id)
                kernel = self.kernels.current(notebook_id)
                if kernel is not None and kernel.alive:
                    await kernel.interrupt()
        else:
            if notebook_id in self._running:
                self._restarted.add(notebook_id)
            if self.kernels.current(notebook_id) is not None or notebook_id in self._running:
                await self.kernels.discard(notebook_id)

    # -- requests (from the API) ------------------------------------------------------

    async def request(
        self,
        notebook_id: uuid.UUID,
        cells: list[tuple[str, str | None]],
        *,
        by: str | None,
        reason: str = "user",
    ) -> list[uuid.UUID]:
        """Commit runs of (cell_id, source as committed or None for the current source).

        Durable before this returns; the cells show "queued" to everyone at once.
        """
        async with open_notebook(self.services.rooms, notebook_id) as notebook:
            items = []
            for cell_id, source in cells:
                cell = notebook.cell(cell_id)
                if cell is None:
                    raise LookupError(f"no cell {cell_id} in this notebook")
                if cell.cell_type != "code":
                    continue
                items.append((cell_id, cell.source if source is None else source, cell.language))
            if not items:
                return []
            run_ids = [uuid.uuid4() for _ in items]
            with notebook.batch():
                for run_id, (cell_id, source, _language) in zip(run_ids, items, strict=True):
                    notebook.set_run(
                        cell_id,
                        {
                            "state": "queued",
                            "run_id": str(run_id),
                            "source_hash": source_hash(source),
                            "by": by,
                            "queued_at": _now(),
                            "reason": reason,
                        },
                    )
            # "queued" is in the log before any worker can claim the run: a worker's
            # "running" written without it would be a concurrent write to the same key,
            # which the CRDT may settle as "queued" for good.
            await self.services.rooms.writer.flushed()
            try:
                await self.queue.request(notebook_id, items, by=by, reason=reason, ids=run_ids)
            except BaseException:
                with notebook.batch():
                    for run_id, (cell_id, *_rest) in zip(run_ids, items, strict=True):
                        notebook.set_run(
                            cell_id,
                            {
                                "state": "error",
                                "run_id": str(run_id),
                                "error": "the run could not be queued; commit it again",
                                "finished_at": _now(),
                            },
                        )
                raise
        self._wake.set()
        return run_ids

    async def interrupt(self, notebook_id: uuid.UUID) -> dict[str, int]:
        """Cancel the queued runs and interrupt the one in progress (on whichever worker)."""
        cancelled = await self.queue.cancel_queued(notebook_id)
        await self._mark_cancelled(notebook_id, cancelled)
        running = await self.queue.running(notebook_id)
        await self.queue.control("interrupt", notebook_id)
        return {"cancelled": len(cancelled), "interrupted": int(running)}

    async def restart(self, notebook_id: uuid.UUID) -> dict[str, int]:
        """Cancel queued runs and replace the kernel: every namespace is gone."""
        cancelled = await self.queue.cancel_queued(notebook_id)
        await self._mark_cancelled(notebook_id, cancelled)
        await self.queue.control("restart", notebook_id)
        async with open_notebook(self.services.rooms, notebook_id) as notebook:
            notebook.set_kernel({"state": "idle", "since": _now(), "restarted": True})
        return {"cancelled": len(cancelled)}

    async def network_allowed(self, workspace_id: uuid.UUID) -> bool:
        value = await self.services.pool.fetchval(
            "SELECT network FROM workspace_executor_settings WHERE workspace_id = $1",
            workspace_id,
        )
        return bool(value)

    async def set_network(self, workspace_id: uuid.UUID, allowed: bool) -> None:
        """Allow or forbid network in this workspace's kernels; running kernels restart."""
        await self.services.pool.execute(
            "INSERT INTO workspace_executor_settings (workspace_id, network) VALUES ($1, $2)"
            " ON CONFLICT (workspace_id) DO UPDATE SET network = $2, updated_at = now()",
            workspace_id,
            allowed,
        )
        for notebook in await self.services.catalog.list_notebooks(workspace_id):
            notebook_id = uuid.UUID(notebook["id"])
            if notebook_id not in self._running:
                await self.kernels.discard(notebook_id)

    async def _mark_cancelled(self, notebook_id: uuid.UUID, rows: list[asyncpg.Record]) -> None:
        if not rows:
            return
        async with open_notebook(self.services.rooms, notebook_id) as notebook:
            with notebook.batch():
                for row in rows:
                    current = notebook.run(row["cell_id"]) or {}
                    if current.get("run_id") == str(row["id"]):
                        notebook.set_run(
                            row["cell_id"], {**current, "state": "cancelled", "finished_at": _now()}
                        )

    # -- loops ------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        assert self._tg is not None
        while True:
            self._wake = anyio.Event()
            while len(self._running) < self.settings.max_kernels:
                try:
                    run = await self.queue.claim(
                        self.worker, self.settings.lease_s, busy=list(self._running)
                    )
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("claiming runs failed: %s", exc)
                    run = None
                if run is None:
                    break
                self._running[run.notebook_id] = run
                self._tg.start_soon(self._execute_guarded, run)
            with anyio.move_on_after(_POLL_S):
                await self._wake.wait()

    async def _lease_loop(self) -> None:
        while True:
            await anyio.sleep(self.settings.lease_s / 3)
            try:
                await self.queue.renew(
                    self.worker, [r.id for r in self._running.values()], self.settings.lease_s
                )
                self._queue_depth = await self.queue.depth()
                for row in await self.queue.expire_leases():
                    log.warning(
                        "run failed: its executor stopped",
                        extra={"notebook_id": str(row["notebook_id"]), "run_id": str(row["id"])},
                    )
                    await self._mark_lost(row)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("renewing run leases failed: %s", exc)

    async def _mark_lost(self, row: asyncpg.Record) -> None:
        with contextlib.suppress(LookupError):
            async with open_notebook(self.services.rooms, row["notebook_id"]) as notebook:
                current = notebook.run(row["cell_id"]) or {}
                if current.get("run_id") == str(row["id"]):
                    notebook.set_run(
                        row["cell_id"],
                        {
                            **current,
                            "state": "error",
                            "finished_at": _now(),
                            "error": "the executor running this cell stopped; run it again",
                        },
                    )

    async def _reap_loop(self) -> None:
        while True:
            await anyio.sleep(min(_REAP_EVERY_S, self.settings.idle_timeout_s))
            await self.kernels.reap_idle()

    # -- one run ----------------------------------------------------------------------

    async def _execute_guarded(self, run: Run) -> None:
        extra = {"notebook_id": str(run.notebook_id), "run_id": str(run.id), "cell_id": run.cell_id}
        self.kernels.busy.add(run.notebook_id)
        try:
            await self._execute(run)
        except Exception:
            log.exception("run failed inside the executor", extra=extra)
            with anyio.CancelScope(shield=True):
                await self.queue.finish(run.id, "error", error="internal executor error")
        finally:
            self.kernels.busy.discard(run.notebook_id)
            self._running.pop(run.notebook_id, None)
            self._interrupted.discard(run.notebook_id)
            self._restarted.discard(run.notebook_id)
            self._wake.set()

    async def _execute(self, run: Run) -> None:
        extra = {
            "notebook_id": str(run.notebook_id),
            "run_id": str(run.id),
            "cell_id": run.cell_id,
            "user_id": run.requested_by,
        }
        try:
            row = await self.services.catalog.get_notebook(run.notebook_id)
        except LookupError:
            await self.queue.finish(run.id, "cancelled", error="notebook deleted")
            return
        workspace_id = uuid.UUID(row["workspace_id"])
        workspace_dir = self.files.workspace_root(workspace_id)
        network = await self.network_allowed(workspace_id)
        async with open_notebook(self.services.rooms, run.notebook_id) as notebook:
            # The run's "queued" (and its source) may have come from another server: apply
            # it before writing over it (see commit).
            try:
                await self.services.feed.catch_up(run.notebook_id)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("run: could not catch up with the log: %s", exc, extra=extra)
            cell = notebook.cell(run.cell_id)
            if cell is None:
                await self.queue.finish(run.id, "cancelled", error="the cell was deleted")
                return
            started = time.monotonic()
            base = {
                "run_id": str(run.id),
                "source_hash": source_hash(run.source),
                "by": run.requested_by,
                "reason": run.reason,
            }
            writer = OutputWriter(notebook, run.cell_id, self.settings.output_cap_bytes)
            kernel: Kernel | None = self.kernels.current(run.notebook_id)
            if kernel is None or not kernel.alive:
                notebook.set_kernel({"state": "starting", "since": _now()})
            try:
                kernel = await self.kernels.get(run.notebook_id, workspace_dir, network)
            except KernelError as exc:
                with notebook.batch():
                    notebook.clear_outputs(run.cell_id)
                    writer.error("KernelError", str(exc), [str(exc)])
                    notebook.set_run(
                        run.cell_id,
                        {**base, "state": "error", "error": str(exc), "finished_at": _now()},
                    )
                    notebook.set_kernel({"state": "dead", "since": _now(), "error": str(exc)})
                await self.queue.finish(run.id, "error", error=str(exc), outputs=writer.outputs)
                log.warning("run failed: no kernel", extra={**extra, "error": str(exc)})
                return
            if run.notebook_id in self._interrupted:
                with notebook.batch():
                    notebook.set_run(
                        run.cell_id, {**base, "state": "cancelled", "finished_at": _now()}
                    )
                    notebook.set_kernel({"state": "idle", "since": _now()})
                await self.queue.finish(run.id, "cancelled", error="interrupted before it started")
                return
            with notebook.batch():
                notebook.clear_outputs(run.cell_id)
                notebook.set_run(run.cell_id, {**base, "state": "running", "started_at": _now()})
                notebook.set_kernel({"state": "busy", "since": _now(), "cell_id": run.cell_id})
            log.info("run started", extra=extra)
            status, defined, symbols, error = await self._drive(kernel, run, notebook, writer)
            duration_ms = round((time.monotonic() - started) * 1000, 1)
            state = "done" if status == "ok" else "error"
            kernel.execution_count += 1
            count = kernel.execution_count
            with notebook.batch():
                notebook.set_execution_count(run.cell_id, count)
                notebook.set_run(
                    run.cell_id,
                    {
                        **base,
                        "state": state,
                        "status": status,
                        "started_at": (notebook.run(run.cell_id) or {}).get("started_at"),
                        "finished_at": _now(),
                        "duration_ms": duration_ms,
                        "execution_count": count,
                        **({"error": error} if error else {}),
                    },
                )
                if symbols is not None:
                    notebook.set_symbols(run.cell_id, symbols)
                notebook.set_kernel({"state": "idle" if kernel.alive else "dead", "since": _now()})
            await self.queue.finish(
                run.id, state, error=error, outputs=writer.outputs, execution_count=count
            )
            self._run_seconds.labels(state=state).observe(duration_ms / 1000)
            log.info("run finished", extra={**extra, "status": status, "duration_ms": duration_ms})
            if status == "ok":
                await self._after_success(notebook, run, defined)

    async def _drive(
        self, kernel: Kernel, run: Run, notebook: NotebookPeer, writer: OutputWriter
    ) -> tuple[str, set[str], list[dict[str, Any]] | None, str | None]:
        """Send the run and follow its messages to the end, enforcing the wall-time limit."""
        cells = notebook.cells()
        ids = [c.id for c in cells]
        position = ids.index(run.cell_id) if run.cell_id in ids else len(ids)
        gone = kernel.known_cells - set(ids)
        if gone:
            await kernel.send({"type": "forget", "cell_ids": sorted(gone)})
            kernel.known_cells -= gone
            with notebook.batch():
                for cell_id in gone:
                    notebook.forget(cell_id)
        kernel.known_cells.add(run.cell_id)
        cell = notebook.cell(run.cell_id)
        await kernel.send(
            {
                "type": "run",
                "run_id": str(run.id),
                "cell_id": run.cell_id,
                "code": run.source,
                "language": run.language,
                "visible": ids[:position],
                "output_name": cell.metadata.get("output_name") if cell else None,
            }
        )
        timeout = self.settings.cell_timeout_s
        deadline = anyio.current_time() + timeout
        interrupted_for_time = False
        while True:
            remaining = deadline - anyio.current_time()
            message = None
            # Wake at least every second: an interrupt sent before the runner started the
            # cell is ignored by it, so it is repeated until the cell ends.
            with anyio.move_on_after(max(min(remaining, 1.0), 0)):
                message = await kernel.receive()
                if message is None:  # the runner died
                    if run.notebook_id in self._restarted:
                        reason = "the kernel was restarted while this cell ran"
                    else:
                        reason = await kernel.death_reason(self.settings.memory_mb)
                    await self.kernels.discard(run.notebook_id)
                    writer.error("KernelDied", reason, [reason])
                    return "error", set(), None, reason
            if message is None and anyio.current_time() < deadline:
                if run.notebook_id in self._interrupted:
                    await kernel.interrupt()
                continue
            if message is None:
                if not interrupted_for_time:
                    interrupted_for_time = True
                    await kernel.interrupt()
                    deadline = anyio.current_time() + self.settings.interrupt_grace_s
                    continue
                reason = (
                    f"the cell ran past its {timeout:g} s limit and did not stop when "
                    "interrupted; the kernel was restarted"
                )
                await self.kernels.discard(run.notebook_id)
                writer.error("TimeoutError", reason, [reason])
                return "error", set(), None, reason
            kind = message.get("type")
            if message.get("run_id") not in (None, str(run.id)):
                continue
            if kind == "stream":
                writer.stream(str(message.get("name", "stdout")), str(message.get("text", "")))
            elif kind == "display":
                writer.add(
                    {
                        "output_type": "display_data",
                        "data": message.get("data") or {},
                        "metadata": message.get("metadata") or {},
                    }
                )
            elif kind == "result":
                writer.add(
                    {
                        "output_type": "execute_result",
                        "data": message.get("data") or {},
                        "metadata": message.get("metadata") or {},
                        "execution_count": kernel.execution_count + 1,
                    }
                )
            elif kind == "error":
                writer.error(
                    str(message.get("ename", "Error")),
                    str(message.get("evalue", "")),
                    [str(t) for t in message.get("traceback") or []],
                )
            elif kind == "done":
                status = str(message.get("status", "error"))
                error = None
                if interrupted_for_time:
                    error = f"the cell ran past its {timeout:g} s limit and was interrupted"
                    writer.error("TimeoutError", error, [error])
                elif status == "interrupted":
                    error = "interrupted"
                elif status == "error":
                    error = "the cell raised an exception"
                return (
                    status,
                    set(message.get("defined") or []),
                    list(message.get("symbols") or []),
                    error,
                )

    async def _after_success(self, notebook: NotebookPeer, run: Run, defined: set[str]) -> None:
        """Mark the cells that read what this run defined as stale; in reactive mode, re-run
        them in order."""
        cells = [c for c in notebook.cells() if c.cell_type == "code"]
        order = [c.id for c in cells]
        reads = {c.id: names_read(c.source) for c in cells}
        defines = {c.id: names_defined(c.source) for c in cells}
        stale = stale_cells(order, run.cell_id, defined | names_defined(run.source), reads, defines)
        if not stale:
            return
        with notebook.batch():
            for cell_id in stale:
                current = notebook.run(cell_id)
                if current and current.get("state") in ("done", "error", "cancelled"):
                    notebook.set_run(
                        cell_id, {**current, "stale": True, "stale_because": run.cell_id}
                    )
        # A reactive re-run does not request more: the first run asked for the whole chain.
        if notebook.metadata().get("reactive") and run.reason != "reactive":
            await self.request(
                run.notebook_id, [(c, None) for c in stale], by=run.requested_by, reason="reactive"
            )
