"""The executor: claims committed runs from the queue, runs them in the notebook's kernel,
and writes run states, outputs and symbols into the document as a peer."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import asyncpg
from anyio.abc import TaskGroup
from prometheus_client import Histogram

from collab.auth.access import Role, notebook_role
from collab.auth.access_watch import CHANNEL as ACCESS_CHANNEL
from collab.auth.accounts import Identity
from collab.errors import NotFound
from collab.services.container import Services
from collab.sync.peers import NotebookPeer, open_notebook
from executor.analysis import CodeCell, KernelNamespaces
from executor.config import ExecutorSettings
from executor.environments import EnvironmentFailure, Environments, Prepared
from executor.environments.pip_magic import installed_note, pip_installs
from executor.environments.requirements import with_requirement
from executor.files import FileStore
from executor.kernel import Kernel, KernelError, docker_client, remove_leftover_kernels
from executor.kernels import KernelPool
from executor.outputs import OutputLimits, OutputWriter, cap_symbols
from executor.queue import CONTROL_CHANNEL, NOTIFY_CHANNEL, Run, RunQueue
from executor.volumes import VolumeError, WorkspaceVolumes, loop_mounts_possible

log = logging.getLogger(__name__)

_POLL_S = 1.0
_REAP_EVERY_S = 30.0


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _volumes(settings: ExecutorSettings) -> WorkspaceVolumes | None:
    """Workspace filesystems of the quota's size (WEFT_FILES_VOLUMES), where possible."""
    if settings.volumes == "off":
        return None
    why_not = loop_mounts_possible()
    if why_not is None:
        return WorkspaceVolumes(settings.files_root, settings.file_quota_bytes, settings.kernel_uid)
    if settings.volumes == "loop":
        raise RuntimeError(f"WEFT_FILES_VOLUMES=loop, but {why_not}")
    log.warning(
        "workspace stores are plain folders, so cells can write past the quota: %s "
        "(set WEFT_FILES_VOLUMES=off to silence this)",
        why_not,
    )
    return None


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
            volumes=_volumes(settings),
        )
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.kernels = KernelPool(None, settings)
        self.environments = Environments(settings.environments, settings.image)
        self.limits = OutputLimits(
            stream_bytes=settings.output_cap_bytes,
            output_bytes=settings.output_max_bytes,
            cell_bytes=settings.cell_outputs_max_bytes,
            cell_count=settings.cell_outputs_max_count,
            record_bytes=settings.run_record_max_bytes,
            symbols_bytes=settings.symbols_max_bytes,
        )
        self._running: dict[uuid.UUID, Run] = {}  # notebook id -> its run in progress
        self._interrupted: set[uuid.UUID] = set()
        # The run the last interrupt of each notebook was for (to offer a kill next time).
        self._interrupts: dict[uuid.UUID, tuple[uuid.UUID, float]] = {}
        self._access_wake = anyio.Event()
        # Notebooks whose kernel was restarted while a run was in progress, and why.
        self._restarted: dict[uuid.UUID, str] = {}
        self._sessions: dict[uuid.UUID, _Session] = {}  # notebook id -> its kernel's names
        self._wake = anyio.Event()
        self._controls: list[tuple[str, uuid.UUID, str]] = []
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
                self.kernels.on_stop = self._kernel_stopped
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
            await listener.add_listener(ACCESS_CHANNEL, self._access_changed)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if worker:
                    tg.start_soon(self._claim_loop)
                    tg.start_soon(self._lease_loop)
                    tg.start_soon(self._reap_loop)
                    tg.start_soon(self._control_loop)
                    tg.start_soon(self._access_loop)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.kernels.close()
                if self.files.volumes is not None:
                    await anyio.to_thread.run_sync(self.files.volumes.unmount_all)
                # At shutdown the database may already be gone; nothing is lost by not saying bye.
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await listener.remove_listener(NOTIFY_CHANNEL, self._notified)
                    await listener.remove_listener(CONTROL_CHANNEL, self._controlled)
                    if worker:
                        await listener.remove_listener(ACCESS_CHANNEL, self._access_changed)
                    await self.services.pool.release(listener)

    def _notified(self, *_args: Any) -> None:
        self._wake.set()

    def _controlled(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        """An interrupt or restart for a notebook, from whichever server took the request."""
        action, _, notebook = payload.partition(":")
        notebook, _, note = notebook.partition(":")  # a restart may say why
        try:
            notebook_id = uuid.UUID(notebook)
        except ValueError:
            return
        # asyncpg calls this outside any task: hand it to the control loop.
        if action in ("interrupt", "restart"):
            self._controls.append((action, notebook_id, note))
            self._control_wake.set()

    async def _control_loop(self) -> None:
        while True:
            await self._control_wake.wait()
            self._control_wake = anyio.Event()
            controls, self._controls = self._controls, []
            for action, notebook_id, note in controls:
                await self._apply_control(action, notebook_id, note)

    async def _apply_control(self, action: str, notebook_id: uuid.UUID, note: str = "") -> None:
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
                self._restarted[notebook_id] = (
                    note or "the kernel was restarted while this cell ran"
                )
            if self.kernels.current(notebook_id) is not None or notebook_id in self._running:
                await self.kernels.discard(notebook_id)

    # -- losing access ends the code one ran ------------------------------------------

    def _access_changed(self, *_args: Any) -> None:
        """Someone's access may have shrunk (collab.auth.access_watch announces it)."""
        self._access_wake.set()

    async def _access_loop(self) -> None:
        """Restart every kernel held here in which someone ran code who may no longer: the
        threads, patches and processes their code left there must not outlive their right."""
        while True:
            await self._access_wake.wait()
            self._access_wake = anyio.Event()
            await anyio.sleep(0.2)  # a burst of changes is checked once
            for kernel in self.kernels.held():
                try:
                    lost = [
                        (user_id, name)
                        for user_id, (link, name) in list(kernel.ran_by.items())
                        if not await self._may_run(kernel.notebook_id, user_id, link)
                    ]
                    if lost:
                        await self._restart_for_access(kernel, lost)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning(
                        "checking who may run code failed: %s",
                        exc,
                        extra={"notebook_id": str(kernel.notebook_id)},
                    )

    async def _may_run(self, notebook_id: uuid.UUID, user_id: str, link: uuid.UUID | None) -> bool:
        try:
            user = uuid.UUID(user_id)
        except ValueError:
            return True  # a run from before runs carried user ids
        pool = self.services.pool
        if link is None:  # a reactive run carries no link: a guest has one, members none
            link = await pool.fetchval(
                "SELECT link_id FROM credentials WHERE user_id = $1 AND link_id IS NOT NULL"
                " LIMIT 1",
                user,
            )
        identity = Identity(
            user_id=user,
            name="",
            email=None,
            guest=link is not None,
            credential_id=uuid.UUID(int=0),
            kind="guest" if link is not None else "session",
            link_id=link,
        )
        try:
            _, role = await notebook_role(pool, identity, notebook_id)
        except NotFound:
            return False
        return role is not None and role >= Role.EDITOR

    async def _restart_for_access(self, kernel: Kernel, lost: list[tuple[str, str | None]]) -> None:
        notebook_id = kernel.notebook_id
        who = ", ".join(name or "someone" for _, name in lost)
        reason = (
            f"the kernel was restarted: {who} can no longer run code in this notebook, and "
            "what their code started must not go on running"
        )
        log.info(
            "kernel restarted: access lost",
            extra={"notebook_id": str(notebook_id), "user_id": ",".join(u for u, _ in lost)},
        )
        for user_id, _name in lost:
            cancelled = await self.queue.cancel_queued(notebook_id, by=user_id)
            await self._mark_cancelled(notebook_id, cancelled)
        if notebook_id in self._running:
            self._restarted[notebook_id] = reason
        await self.kernels.discard(notebook_id, kernel)
        with contextlib.suppress(LookupError):
            async with open_notebook(self.services.rooms, notebook_id) as notebook:
                with notebook.batch():
                    notebook.set_kernel(
                        {"state": "idle", "since": _now(), "restarted": True, "reason": reason}
                    )
                    _mark_previous_kernel(notebook)

    # -- requests (from the API) ------------------------------------------------------

    async def request(
        self,
        notebook_id: uuid.UUID,
        cells: list[tuple[str, str | None]],
        *,
        by: str | None,
        reason: str = "user",
        by_name: str | None = None,
        link: uuid.UUID | None = None,
    ) -> list[uuid.UUID]:
        """Commit runs of (cell_id, source as committed or None for the current source),
        by the user whose id is ``by`` (``by_name`` to show; ``link``: a guest's share link).

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
                            "by_name": by_name,
                            "queued_at": _now(),
                            "reason": reason,
                        },
                    )
            # "queued" is in the log before any worker can claim the run: a worker's
            # "running" written without it would be a concurrent write to the same key,
            # which the CRDT may settle as "queued" for good.
            await self.services.rooms.writer.flushed()
            try:
                await self.queue.request(
                    notebook_id,
                    items,
                    by=by,
                    reason=reason,
                    ids=run_ids,
                    by_name=by_name,
                    link=link,
                )
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

    async def interrupt(self, notebook_id: uuid.UUID) -> dict[str, Any]:
        """Cancel the queued runs and interrupt the one in progress (on whichever worker).

        A cell stuck in C code ignores interrupts: when the run an earlier interrupt was
        for is still running, the answer offers to kill the kernel (``kill_offered``; the
        client asks the person, then sends ``{"kill": true}``)."""
        cancelled = await self.queue.cancel_queued(notebook_id)
        await self._mark_cancelled(notebook_id, cancelled)
        running = await self.queue.running_id(notebook_id)
        await self.queue.control("interrupt", notebook_id)
        earlier = self._interrupts.get(notebook_id)
        now = time.monotonic()
        stuck = running is not None and earlier is not None and earlier[0] == running
        if running is not None and not stuck:
            self._interrupts[notebook_id] = (running, now)
        elif running is None:
            self._interrupts.pop(notebook_id, None)
        return {
            "cancelled": len(cancelled),
            "interrupted": int(running is not None),
            "kill_offered": stuck,
        }

    async def restart(
        self, notebook_id: uuid.UUID, killed_by: str | None = None, reason: str | None = None
    ) -> dict[str, int]:
        """Cancel queued runs and replace the kernel: every namespace is gone."""
        cancelled = await self.queue.cancel_queued(notebook_id)
        await self._mark_cancelled(notebook_id, cancelled)
        self._interrupts.pop(notebook_id, None)
        if killed_by is not None:
            reason = f"{killed_by} killed the kernel: its cell did not stop when interrupted"
        await self.queue.control("restart", notebook_id, (reason or "")[:1000])
        async with open_notebook(self.services.rooms, notebook_id) as notebook:
            with notebook.batch():
                notebook.set_kernel(
                    {
                        "state": "idle",
                        "since": _now(),
                        "restarted": True,
                        **({"reason": reason} if reason else {}),
                    }
                )
                _mark_previous_kernel(notebook)  # every namespace is gone
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
                await self._mark_failed(run, "internal executor error; run the cell again")
        finally:
            self.kernels.busy.discard(run.notebook_id)
            self._running.pop(run.notebook_id, None)
            self._interrupted.discard(run.notebook_id)
            self._restarted.pop(run.notebook_id, None)
            self._wake.set()

    async def _mark_failed(self, run: Run, reason: str) -> None:
        """The cell shows that its run failed (never "running" forever), and the kernel,
        in a state no one can vouch for, is replaced."""
        try:
            await self.kernels.discard(run.notebook_id)
            async with open_notebook(self.services.rooms, run.notebook_id) as notebook:
                current = notebook.run(run.cell_id) or {}
                if current.get("run_id") == str(run.id):
                    with notebook.batch():
                        notebook.set_run(
                            run.cell_id,
                            {**current, "state": "error", "error": reason, "finished_at": _now()},
                        )
                        notebook.set_kernel({"state": "dead", "since": _now(), "error": reason})
        except Exception:
            log.exception("could not mark a failed run", extra={"run_id": str(run.id)})

    def _kernel_stopped(self, kernel: Kernel) -> None:
        """A kernel's reader stopped. If it broke the protocol, remove it and say why in the
        notebook (a run in progress says so itself: see _drive)."""
        if kernel.violation is None or self._tg is None:
            return
        self._tg.start_soon(self._after_violation, kernel)

    async def _after_violation(self, kernel: Kernel) -> None:
        notebook_id = kernel.notebook_id
        reason = f"{kernel.violation}; the kernel was stopped"
        log.warning("kernel stopped: %s", reason, extra={"notebook_id": str(notebook_id)})
        await self.kernels.discard(notebook_id, kernel)
        with contextlib.suppress(LookupError):
            async with open_notebook(self.services.rooms, notebook_id) as notebook:
                with notebook.batch():
                    if kernel.forged_run is not None:
                        run_id, cell_id = kernel.forged_run
                        current = notebook.run(cell_id) or {}
                        if current.get("run_id") == run_id:
                            notebook.set_run(
                                cell_id,
                                {**current, "state": "error", "status": "error", "error": reason},
                            )
                            notebook.set_symbols(cell_id, [])
                    if notebook_id not in self._running:
                        notebook.set_kernel({"state": "dead", "since": _now(), "error": reason})
        if kernel.forged_run is not None:
            await self.queue.mark_error(uuid.UUID(kernel.forged_run[0]), reason)

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
        try:
            # Off the loop: the workspace's filesystem may be made and mounted now.
            workspace_dir = await anyio.to_thread.run_sync(self.files.workspace_root, workspace_id)
        except VolumeError as exc:
            await self._mark_failed(run, str(exc))
            await self.queue.finish(run.id, "error", error=str(exc))
            return
        network = await self.network_allowed(workspace_id)
        async with open_notebook(self.services.rooms, run.notebook_id) as notebook:
            # The run's "queued" (and its source) may have come from another server: apply
            # it before writing over it (see commit).
            try:
                await self.services.replication.catch_up(run.notebook_id)
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
                "by_name": run.requested_by_name,
                "reason": run.reason,
            }
            writer = OutputWriter(notebook, run.cell_id, self.limits)
            try:
                pip_note = self._pip_installs(notebook, run)
                environment = await self._environment(notebook)
            except EnvironmentFailure as failure:
                with notebook.batch():
                    notebook.clear_outputs(run.cell_id)
                    writer.error("DependencyError", failure.message, [failure.message])
                    notebook.set_run(
                        run.cell_id,
                        {**base, "state": "error", "error": failure.message, "finished_at": _now()},
                    )
                await self.queue.finish(
                    run.id, "error", error=failure.message, outputs=writer.outputs
                )
                return
            kernel: Kernel | None = self.kernels.current(run.notebook_id)
            restart = _environment_restart(kernel, environment)
            if kernel is None or not kernel.alive or restart:
                notebook.set_kernel({"state": "starting", "since": _now(), **restart})
            try:
                kernel = await self.kernels.get(
                    run.notebook_id,
                    workspace_dir,
                    network,
                    environment.mount,
                )
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
            base["kernel"] = self._session(run.notebook_id, kernel, notebook).id
            with notebook.batch():
                notebook.clear_outputs(run.cell_id)
                notebook.set_run(run.cell_id, {**base, "state": "running", "started_at": _now()})
                notebook.set_kernel({"state": "busy", "since": _now(), "cell_id": run.cell_id})
            if run.requested_by is not None:  # their right to run code is watched from now on
                known = kernel.ran_by.get(run.requested_by, (None, None))
                kernel.ran_by[run.requested_by] = (
                    run.requested_link or known[0],
                    run.requested_by_name or known[1],
                )
            log.info("run started", extra=extra)
            status, defined, symbols, error = await self._drive(
                kernel, run, notebook, writer, pip_note
            )
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
                        # The kernel died or was replaced: what the run bound is gone.
                        **({} if kernel.alive else {"previous_kernel": True}),
                    },
                )
                if symbols is not None:
                    notebook.set_symbols(
                        run.cell_id, cap_symbols(symbols, self.settings.symbols_max_bytes)
                    )
                notebook.set_kernel({"state": "idle" if kernel.alive else "dead", "since": _now()})
            await self.queue.finish(
                run.id, state, error=error, outputs=writer.outputs, execution_count=count
            )
            self._run_seconds.labels(state=state).observe(duration_ms / 1000)
            log.info("run finished", extra={**extra, "status": status, "duration_ms": duration_ms})
            await self._after_run(notebook, run, status, defined)

    async def _drive(
        self,
        kernel: Kernel,
        run: Run,
        notebook: NotebookPeer,
        writer: OutputWriter,
        pip_note: str | None = None,
    ) -> tuple[str, set[str], list[dict[str, Any]] | None, str | None]:
        """Send the run and follow its messages to the end, enforcing the wall-time limit."""
        cells = notebook.cells()
        ids = [c.id for c in cells]
        position = ids.index(run.cell_id) if run.cell_id in ids else len(ids)
        session = self._sessions.get(run.notebook_id)
        if session is not None:  # deleted cells are forgotten, moves noted, before the run
            await self._sync_cells(run.notebook_id, notebook, session)
            if session.forget:
                await self._send_forget(session)
        kernel.known_cells.add(run.cell_id)
        cell = notebook.cell(run.cell_id)
        kernel.begin(str(run.id), run.cell_id)
        try:
            return await self._follow(kernel, run, notebook, writer, ids[:position], cell, pip_note)
        finally:
            kernel.end()

    async def _follow(
        self,
        kernel: Kernel,
        run: Run,
        notebook: NotebookPeer,
        writer: OutputWriter,
        visible: list[str],
        cell: Any,
        pip_note: str | None = None,
    ) -> tuple[str, set[str], list[dict[str, Any]] | None, str | None]:
        timeout = self.settings.cell_timeout_s
        # A runner that stopped reading its input (cell code can make it) must not hold the
        # run past its time limit.
        with anyio.move_on_after(timeout) as sending:
            await kernel.send(
                {
                    "type": "run",
                    "run_id": str(run.id),
                    "cell_id": run.cell_id,
                    "code": run.source,
                    "language": run.language,
                    "visible": visible,
                    "output_name": cell.metadata.get("output_name") if cell else None,
                    **({"pip_note": pip_note} if pip_note else {}),
                }
            )
        if sending.cancelled_caught:
            reason = "the kernel stopped reading what it is sent; the kernel was restarted"
            await self.kernels.discard(run.notebook_id)
            writer.error("KernelDied", reason, [reason])
            return "error", set(), None, reason
        deadline = anyio.current_time() + timeout
        interrupted_for_time = False
        while True:
            remaining = deadline - anyio.current_time()
            message = None
            # Wake at least every second: an interrupt sent before the runner started the
            # cell is ignored by it, so it is repeated until the cell ends.
            with anyio.move_on_after(max(min(remaining, 1.0), 0)):
                message = await kernel.receive()
                if message is None:  # the runner died, or broke the protocol
                    if run.notebook_id in self._restarted:
                        reason = self._restarted[run.notebook_id]
                    elif kernel.violation is not None:
                        reason = f"{kernel.violation}; the kernel was stopped"
                    else:
                        reason = await kernel.death_reason(self.settings.memory_mb)
                    await self.kernels.discard(run.notebook_id)
                    ename = "KernelDied" if kernel.violation is None else "ProtocolError"
                    writer.error(ename, reason, [reason])
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
            # Checked by the kernel (executor.protocol): the shapes hold, and it is this run's.
            kind = message["type"]
            if kind == "stream":
                writer.stream(message["name"], message["text"])
            elif kind == "display":
                writer.add(
                    {
                        "output_type": "display_data",
                        "data": message["data"],
                        "metadata": message["metadata"],
                    }
                )
            elif kind == "result":
                writer.add(
                    {
                        "output_type": "execute_result",
                        "data": message["data"],
                        "metadata": message["metadata"],
                        "execution_count": kernel.execution_count + 1,
                    }
                )
            elif kind == "error":
                evalue = message["evalue"] + self._limit_hint(message)
                traceback = message["traceback"]
                if message["ename"] == "NameError":
                    evalue, traceback = self._explain_name_error(notebook, run, evalue, traceback)
                writer.error(message["ename"], evalue, traceback)
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
                if (session := self._sessions.get(run.notebook_id)) is not None:
                    session.changed = message.get("changed")
                return status, set(message["defined"]), list(message["symbols"]), error

    # -- environments (executor.environments) ------------------------------------------

    def _pip_installs(self, notebook: NotebookPeer, run: Run) -> str | None:
        """A cell's `%pip install X` lines add X to the notebook's dependencies (before the
        environment is prepared for the run); returns what those lines print."""
        wanted = pip_installs(run.source)
        if not wanted:
            return None
        dependencies = notebook.metadata().get("dependencies")
        added: list[str] = []
        replaced: list[str] = []
        for requirement in wanted:
            updated, old = with_requirement(dependencies, requirement)
            if updated != dependencies:
                added.append(requirement)
                replaced += [old] if old else []
            dependencies = updated
        if added:
            notebook.set_metadata("dependencies", dependencies)
            log.info(
                "dependencies added by %%pip",
                extra={"notebook_id": str(run.notebook_id), "user_id": run.requested_by},
            )
        return installed_note(added, replaced)

    async def _environment(self, notebook: NotebookPeer) -> Prepared:
        client = self.kernels.client
        if client is None:  # the run fails on the missing engine with its own message
            return Prepared(None, None)
        return await self.environments.prepare(notebook, client)

    async def prepare_environment(self, notebook_id: uuid.UUID, *, update: bool) -> None:
        """Prepare the notebook's environment now (the Configuration panel's edits), so its
        next run starts at once; a kernel with another set is restarted when idle."""
        client = self.kernels.client
        if client is None:
            raise KernelError(
                self.docker_error or "this server runs no kernels: the next run prepares it"
            )
        if notebook_id in self._running or await self.queue.running_id(notebook_id):
            raise RuntimeError(
                "a cell is running: the environment is prepared when the next cell runs"
            )
        async with open_notebook(self.services.rooms, notebook_id) as notebook:
            environment = await self.environments.prepare(notebook, client, update=update)
            kernel = self.kernels.current(notebook_id)
            restart = _environment_restart(kernel, environment)
            if restart:
                await self.kernels.discard(notebook_id)
            with notebook.batch():
                alive = kernel is not None and kernel.alive and not restart
                notebook.set_kernel(
                    {
                        **({"state": "idle"} if alive else {}),
                        "since": _now(),
                        "environment_ready": True,
                        **restart,
                    }
                )
                if restart:
                    _mark_previous_kernel(notebook)

    def _limit_hint(self, error: dict[str, Any]) -> str:
        """Why a cell could not start a thread or a process, when the kernel's pids limit
        is the likely cause (threads and processes of earlier cells count too)."""
        text = f"{error['ename']}: {error['evalue']}"
        if error["ename"] in ("BlockingIOError", "RuntimeError", "OSError") and (
            "can't start new thread" in text
            or "Resource temporarily unavailable" in text
            or "[Errno 11]" in text
        ):
            return (
                f" (the kernel reached its limit of {self.settings.pids} processes and "
                "threads, WEFT_KERNEL_PIDS; threads or processes that earlier cells started "
                "count too: stop them or restart the kernel)"
            )
        return ""

    # -- no hidden state: stale marks, deleted and moved cells, kernels that are gone ------

    def _session(self, notebook_id: uuid.UUID, kernel: Kernel, notebook: NotebookPeer) -> _Session:
        """The host's record of `kernel`'s namespaces; a new kernel gets a new one, and every
        run state and symbol from an earlier kernel is marked as such (its names are gone)."""
        session = self._sessions.get(notebook_id)
        if session is not None and session.kernel is kernel:
            return session
        if session is not None:
            session.scope.cancel()
        session = _Session(kernel)
        self._sessions[notebook_id] = session
        _mark_previous_kernel(notebook, keep=session.id)
        with contextlib.suppress(RuntimeError):  # the task group is shutting down
            if self._tg is not None:
                self._tg.start_soon(self._watch, notebook_id, session)
        return session

    async def _watch(self, notebook_id: uuid.UUID, session: _Session) -> None:
        """While the kernel lives: mark stale at once the cells whose visible names a delete
        or a move changed, and forget deleted cells; when it is gone, say so everywhere."""
        rooms = self.services.rooms

        def alive() -> bool:
            return self.kernels.current(notebook_id) is session.kernel and session.kernel.alive

        wake = [anyio.Event()]
        with session.scope:
            try:
                while alive():
                    # The room watched is let go now and then: a room rebuilt from the log is
                    # a new document, and every look below opens the current one.
                    async with open_notebook(rooms, notebook_id) as watched:
                        stop = watched.observe_cells(lambda _delta: wake[0].set())
                        try:
                            for _ in range(30):
                                with anyio.move_on_after(2.0):
                                    await wake[0].wait()
                                if not alive():
                                    break
                                if wake[0].is_set():
                                    wake[0] = anyio.Event()
                                    await anyio.sleep(0.05)  # one burst of edits, one look
                                async with open_notebook(rooms, notebook_id) as notebook:
                                    await self._sync_cells(notebook_id, notebook, session)
                        finally:
                            stop()
                if self._sessions.get(notebook_id) is session:
                    del self._sessions[notebook_id]
                async with open_notebook(rooms, notebook_id) as notebook:
                    _mark_previous_kernel(notebook, gone=session.id)
            except LookupError:
                pass  # the notebook was deleted
            except Exception:
                log.exception("watching the cells failed", extra={"notebook_id": str(notebook_id)})

    async def _sync_cells(
        self, notebook_id: uuid.UUID, notebook: NotebookPeer, session: _Session
    ) -> None:
        """Bring the session up to the notebook's cells: deleted cells are forgotten (by the
        kernel when it is not running a cell: the next run's turn otherwise) and their run
        states and symbols dropped; cells whose visible names changed become stale."""
        async with session.lock:
            stale, gone = session.names.cells_changed(_code_cells(notebook))
            session.forget.update(gone)
            with notebook.batch():
                for cell_id in gone:
                    notebook.forget(cell_id)
                _mark_stale(notebook, stale, because=None)
            if session.forget and notebook_id not in self._running:
                await self._send_forget(session)
        if stale and notebook_id not in self._running:
            await self._react(notebook_id, notebook, stale, by=None)

    async def _send_forget(self, session: _Session) -> None:
        forget, session.forget = sorted(session.forget), set()
        await session.kernel.send({"type": "forget", "cell_ids": forget})

    async def _after_run(
        self, notebook: NotebookPeer, run: Run, status: str, defined: set[str]
    ) -> None:
        """Mark the cells whose visible names this run changed (successful or not) as stale;
        in reactive mode, re-run them in order, each with its last committed source. A failed
        run of run-all (or run-below, run-stale) cancels the rest when the notebook's
        `stop_on_error` is set, as Jupyter does."""
        stop = (
            status != "ok"
            and run.reason in ("run-all", "run-below", "run-stale")
            and bool(notebook.metadata().get("stop_on_error"))
        )
        if stop:
            cancelled = await self.queue.cancel_queued(run.notebook_id)
            await self._mark_cancelled(run.notebook_id, cancelled)
        session = self._sessions.get(run.notebook_id)
        if session is None or not session.kernel.alive:
            return  # the kernel is gone, and every name with it
        changed, session.changed = session.changed, None
        async with session.lock:
            cells = _code_cells(notebook)
            stale = session.names.ran(cells, run.cell_id, defined, changed)
            moved, gone = session.names.cells_changed(cells)  # edits made while it ran
            session.forget.update(gone)
            stale = [c.id for c in cells if c.id in {*stale, *moved}]
            with notebook.batch():
                for cell_id in gone:
                    notebook.forget(cell_id)
                _mark_stale(notebook, stale, because=run.cell_id)
        if stop:
            return
        # A reactive re-run does not request more: the first run asked for the whole chain.
        # An interrupted run asked for nothing more either.
        if run.reason != "reactive" and status != "interrupted":
            await self._react(run.notebook_id, notebook, stale, by=run.requested_by)

    async def _react(
        self, notebook_id: uuid.UUID, notebook: NotebookPeer, stale: list[str], by: str | None
    ) -> None:
        """In reactive mode, queue the stale cells again with the source each last committed
        (a draft someone is typing is not committed), so they show "edited" if it differs."""
        if not stale or not notebook.metadata().get("reactive"):
            return
        runs = {c: notebook.run(c) or {} for c in stale}
        ids: dict[str, uuid.UUID] = {}
        for cell_id, state in runs.items():
            with contextlib.suppress(ValueError, TypeError):
                if state.get("state") in ("done", "error", "cancelled"):
                    ids[cell_id] = uuid.UUID(str(state.get("run_id")))
        sources = await self.queue.sources(list(ids.values())) if ids else {}
        items: list[tuple[str, str | None]] = [
            (c, sources[ids[c]]) for c in stale if c in ids and ids[c] in sources
        ]
        if items:
            with contextlib.suppress(LookupError):  # a cell deleted meanwhile
                await self.request(notebook_id, items, by=by, reason="reactive")

    def _explain_name_error(
        self, notebook: NotebookPeer, run: Run, evalue: str, traceback: list[str]
    ) -> tuple[str, list[str]]:
        """ "name 'x' is not defined", and where it is: in a cell below this one, or in a cell
        above whose last run did not bind it."""
        match = re.match(r"name '([^']+)' is not defined", evalue)
        if match is None:
            return evalue, traceback
        name = match.group(1)
        cells = notebook.cells()
        position = next((c.index for c in cells if c.id == run.cell_id), len(cells))
        session = self._sessions.get(run.notebook_id)
        bound = session.names.bound if session is not None else {}
        note = None
        for c in cells[position + 1 :]:
            code = c.cell_type == "code"
            if code and (name in bound.get(c.id, ()) or name in _cell_defines(c)):
                note = f"{name} is defined by Cell {c.index + 1}, below this cell"
                break
        else:
            for c in reversed(cells[:position]):
                if c.cell_type != "code" or name in bound.get(c.id, ()):
                    continue
                if name in _cell_defines(c):
                    note = (
                        f"{name} is defined by Cell {c.index + 1}, whose last run did not "
                        "bind it: run that cell"
                    )
                    break
        if note is None:
            return evalue, traceback
        evalue = f"{evalue} ({note})"
        lines = list(traceback)
        if lines and lines[-1].startswith("NameError:"):
            lines[-1] = f"{lines[-1]} ({note})"
        return evalue, lines


@dataclass(eq=False)
class _Session:
    """One kernel's namespaces as the host knows them (see analysis.KernelNamespaces)."""

    kernel: Kernel
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])
    names: KernelNamespaces = dataclasses.field(default_factory=KernelNamespaces)
    lock: anyio.Lock = dataclasses.field(default_factory=anyio.Lock)
    scope: anyio.CancelScope = dataclasses.field(default_factory=anyio.CancelScope)
    forget: set[str] = dataclasses.field(default_factory=set)  # deleted, not yet forgotten
    changed: list[str] | None = None  # the last `done`'s names whose binding changed


def _code_cells(notebook: NotebookPeer) -> list[CodeCell]:
    return [
        CodeCell(c.id, c.source, c.language, _output_name(c.metadata))
        for c in notebook.cells()
        if c.cell_type == "code"
    ]


def _output_name(metadata: dict[str, Any]) -> str | None:
    name = metadata.get("output_name")
    return name if isinstance(name, str) and name else None


def _cell_defines(cell: Any) -> set[str]:
    return CodeCell(cell.id, cell.source, cell.language, _output_name(cell.metadata)).defines()


def _environment_restart(kernel: Kernel | None, environment: Prepared) -> dict[str, Any]:
    """The kernel status's note when a live kernel must make way for another package set."""
    if kernel is None or not kernel.alive or kernel.environment == environment.key:
        return {}
    return {
        "restarted": True,
        "reason": "the dependencies changed: the kernel was restarted with the new "
        "environment, and the names earlier runs defined are gone",
    }


def _mark_stale(notebook: NotebookPeer, cells: list[str], because: str | None) -> None:
    for cell_id in cells:
        current = notebook.run(cell_id)
        if (
            current
            and current.get("state") in ("done", "error", "cancelled")
            and not current.get("previous_kernel")
        ):
            notebook.set_run(cell_id, {**current, "stale": True, "stale_because": because})


def _mark_previous_kernel(
    notebook: NotebookPeer, *, keep: str | None = None, gone: str | None = None
) -> None:
    """Runs (and their symbols) of a kernel that is gone: the kernel `gone`, or every kernel
    but `keep`, or (neither given) every kernel. Their outputs stay, marked as from a
    previous kernel; the names they bound no longer exist, so their symbols are dropped."""
    symbols = notebook.symbols()
    with notebook.batch():
        for cell_id, state in notebook.runs().items():
            kernel = state.get("kernel")
            if (keep is not None and kernel == keep) or (gone is not None and kernel != gone):
                continue
            if state.get("state") in ("done", "error", "cancelled"):
                if not state.get("previous_kernel"):
                    notebook.set_run(cell_id, {**state, "previous_kernel": True})
                if symbols.get(cell_id):
                    notebook.set_symbols(cell_id, [])
