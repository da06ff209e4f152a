"""The executor: commits runs, and on a worker claims them, runs them in the notebook's
kernel, and writes run states, outputs and symbols into the document as a peer.

Its parts, each a module: the API side here (commit, interrupt, restart, network); the
worker loops (``worker``); one run's life (``cell_run``); run states in PostgreSQL and the
document (``run_states``); the stale marks (``sessions``)."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import anyio
from prometheus_client import Counter, Histogram

from collab.auth.access_watch import CHANNEL as ACCESS_CHANNEL
from collab.document.schema import KernelState, KernelStatus
from collab.services.container import Services
from collab.storage.database import DATABASE_ERRORS
from collab.sync.peers import NotebookPeers
from executor.cell_run import RunContext, environment_restart
from executor.config import ExecutorSettings
from executor.environments import Environments
from executor.files import FileStore
from executor.in_progress import InProgress
from executor.kernel import Kernel, KernelError, docker_client, remove_leftover_kernels
from executor.kernels import KernelPool
from executor.outputs import OutputLimits
from executor.prestart import KernelPrestart
from executor.queue import CONTROL_CHANNEL, NOTIFY_CHANNEL, RunQueue
from executor.run_states import Commit, RunStates, now
from executor.sessions import KernelSessions
from executor.volumes import WorkspaceVolumes, loop_mounts_possible
from executor.worker import Worker

log = logging.getLogger(__name__)


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
    """Owns the kernel pool and the worker; lives inside the server's lifespan.

    >>> async with Executor(settings, services).running() as executor:
    ...     run_ids = await executor.request(notebook_id, [(cell_id, None)], by=user_id)
    """

    def __init__(self, settings: ExecutorSettings, services: Services) -> None:
        self.settings = settings
        self.services = services
        self.queue = RunQueue(services.pool)
        self.notebooks = NotebookPeers(services.rooms, services.replication)
        self.states = RunStates(self.queue, self.notebooks)
        self.files = FileStore(
            settings.files_root,
            settings.file_quota_bytes,
            settings.upload_limit_bytes,
            owner_uid=settings.kernel_uid,
            volumes=_volumes(settings),
        )
        self.kernels = KernelPool(None, settings)
        self.environments = Environments(settings.environments, settings.runtimes)
        self.in_progress = InProgress()
        self.sessions = KernelSessions(
            self.notebooks,
            lambda: self.kernels,
            self.states,
            self.queue,
            self.in_progress,
            self.request,
        )
        # The run the last interrupt of each notebook was for (to offer a kill next time).
        self._interrupts: dict[uuid.UUID, tuple[uuid.UUID, float]] = {}
        self.docker_error: str | None = None  # why this server has no kernels
        metrics = services.metrics
        context = RunContext(
            settings=settings,
            files=self.files,
            kernels=lambda: self.kernels,
            notebooks=self.notebooks,
            states=self.states,
            sessions=self.sessions,
            in_progress=self.in_progress,
            limits=OutputLimits(
                stream_bytes=settings.output_cap_bytes,
                output_bytes=settings.output_max_bytes,
                cell_bytes=settings.cell_outputs_max_bytes,
                cell_count=settings.cell_outputs_max_count,
                record_bytes=settings.run_record_max_bytes,
                symbols_bytes=settings.symbols_max_bytes,
            ),
            run_seconds=Histogram(
                "weft_run_seconds",
                "Commit-to-finish time of runs, by final state",
                ["state"],
                buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600),
                registry=metrics.registry,
            ),
            catch_ups=Counter(
                "weft_run_log_catch_ups",
                "Runs that applied the notebook's log before starting, because their "
                "'queued' (from another server) was not in this server's document yet",
                registry=metrics.registry,
            ),
            environments=self.environments,
        )
        self.worker = Worker(context, self.queue, services.pool)
        metrics.gauge(
            "weft_kernels", "Kernel containers alive in this process", lambda: len(self.kernels)
        )
        metrics.gauge(
            "weft_runs_in_progress",
            "Runs this process is executing",
            lambda: len(self.in_progress.runs),
        )
        metrics.gauge(
            "weft_run_queue_depth",
            "Runs queued, all workers (sampled)",
            lambda: self.worker.queue_depth,
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
            await self._connect_docker()
        listener = await self.services.pool.acquire()
        if worker:
            await listener.add_listener(NOTIFY_CHANNEL, self.worker.wake)
            await listener.add_listener(CONTROL_CHANNEL, self.worker.controlled)
            await listener.add_listener(ACCESS_CHANNEL, self.worker.access_changed)
        try:
            async with anyio.create_task_group() as tg:
                self.sessions.tg = tg
                prestart: KernelPrestart | None = None
                try:
                    # The worker's loops and runs (a BackgroundService) stop first, then the
                    # sessions' and prestarts' tasks.
                    async with contextlib.AsyncExitStack() as stack:
                        if worker:
                            await stack.enter_async_context(self.worker)
                            tg.start_soon(self._clean_environments)
                            if self.settings.prestart:
                                prestart = KernelPrestart(self, tg)
                                self.services.rooms.hooks.add(prestart)
                        try:
                            yield self
                        finally:
                            if prestart is not None:
                                self.services.rooms.hooks.remove(prestart)
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.kernels.close()
                if self.files.volumes is not None:
                    await anyio.to_thread.run_sync(self.files.volumes.unmount_all)
                # At shutdown the database may already be gone; nothing is lost by not saying bye.
                with contextlib.suppress(*DATABASE_ERRORS):
                    if worker:
                        await listener.remove_listener(NOTIFY_CHANNEL, self.worker.wake)
                        await listener.remove_listener(CONTROL_CHANNEL, self.worker.controlled)
                        await listener.remove_listener(ACCESS_CHANNEL, self.worker.access_changed)
                    await self.services.pool.release(listener)

    async def _clean_environments(self) -> None:
        """Old environment sets removed at start and every WEFT_ENV_CLEAN_INTERVAL_SECONDS
        (executor.environments.store: never one in use, or given to a kernel lately)."""
        while True:
            client = self.kernels.client
            if client is not None:
                try:
                    await self.environments.clean(client, self.kernels.mounted())
                except Exception:
                    log.exception("cleaning old environment sets failed")
            await anyio.sleep(self.settings.environments.clean_interval_s)

    async def _connect_docker(self) -> None:
        try:
            client = await anyio.to_thread.run_sync(docker_client)
            removed = await remove_leftover_kernels(client, self.settings.instance)
            self.kernels = KernelPool(client, self.settings, hooks=self.worker)
            log.info(
                "executor ready", extra={"worker": self.worker.id, "leftover_kernels": removed}
            )
        except KernelError as exc:
            # The server still serves documents; runs fail with this message.
            self.docker_error = str(exc)
            log.error("executor has no Docker engine: %s", exc)

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
        async with self.notebooks.open(notebook_id) as notebook:
            commits = []
            for cell_id, source in cells:
                cell = notebook.cell(cell_id)
                if cell is None:
                    raise LookupError(f"no cell {cell_id} in this notebook")
                if cell.cell_type != "code":
                    continue
                committed = cell.source if source is None else source
                commits.append(Commit(uuid.uuid4(), cell_id, committed, cell.language))
            if not commits:
                return []
            await self.states.commit(
                notebook, commits, by=by, by_name=by_name, reason=reason, link=link
            )
        self.worker.wake()
        return [c.run_id for c in commits]

    async def interrupt(self, notebook_id: uuid.UUID) -> dict[str, Any]:
        """Cancel the queued runs and interrupt the one in progress (on whichever worker).

        A cell stuck in C code ignores interrupts: when the run an earlier interrupt was
        for is still running, the answer offers to kill the kernel (``kill_offered``; the
        client asks the person, then sends ``{"kill": true}``)."""
        cancelled = await self.states.cancel_queued(notebook_id)
        running = await self.queue.running_id(notebook_id)
        await self.queue.control("interrupt", notebook_id)
        earlier = self._interrupts.get(notebook_id)
        stuck = running is not None and earlier is not None and earlier[0] == running
        if running is not None and not stuck:
            self._interrupts[notebook_id] = (running, time.monotonic())
        elif running is None:
            self._interrupts.pop(notebook_id, None)
        return {
            "cancelled": cancelled,
            "interrupted": int(running is not None),
            "kill_offered": stuck,
        }

    async def restart(
        self, notebook_id: uuid.UUID, killed_by: str | None = None, reason: str | None = None
    ) -> dict[str, int]:
        """Cancel queued runs and replace the kernel: every namespace is gone."""
        cancelled = await self.states.cancel_queued(notebook_id)
        self._interrupts.pop(notebook_id, None)
        if killed_by is not None:
            reason = f"{killed_by} killed the kernel: its cell did not stop when interrupted"
        await self.queue.control("restart", notebook_id, (reason or "")[:1000])
        async with self.notebooks.open(notebook_id) as notebook:
            status: KernelStatus = {"state": KernelState.IDLE, "since": now(), "restarted": True}
            if reason:
                status["reason"] = reason
            with notebook.batch():
                notebook.set_kernel(status)
                self.sessions.mark_previous_kernel(notebook)  # every namespace is gone
        return {"cancelled": cancelled}

    def live_kernel(self, notebook_id: uuid.UUID) -> tuple[Kernel, str] | None:
        """The notebook's kernel in this process, if it lives, and its id (run states carry
        it as ``kernel``): what kernel requests are asked of (executor.cell_requests)."""
        kernel = self.kernels.current(notebook_id)
        session = self.sessions.get(notebook_id)
        if kernel is None or not kernel.alive or session is None or session.kernel is not kernel:
            return None
        return kernel, session.id

    async def prepare_environment(self, notebook_id: uuid.UUID, *, update: bool) -> None:
        """Prepare the notebook's environment now (the Configuration panel's edits), so its
        next run starts at once; a kernel with another set is restarted when idle."""
        client = self.kernels.client
        if client is None:
            raise KernelError(
                self.docker_error or "this server runs no kernels: the next run prepares it"
            )
        if self.in_progress.running(notebook_id) or await self.queue.running_id(notebook_id):
            raise RuntimeError(
                "a cell is running: the environment is prepared when the next cell runs"
            )
        async with self.notebooks.open(notebook_id) as notebook:
            environment = await self.environments.prepare(notebook, client, update=update)
            kernel = self.kernels.current(notebook_id)
            restart = environment_restart(kernel, environment, self.settings.image)
            if restart:
                await self.kernels.discard(notebook_id)
            with notebook.batch():
                alive = kernel is not None and kernel.alive and not restart
                status: dict[str, Any] = {
                    **({"state": KernelState.IDLE} if alive else {}),
                    "since": now(),
                    "environment_ready": True,
                    **restart,
                }
                notebook.set_kernel(cast(KernelStatus, status))
                if restart:
                    self.sessions.mark_previous_kernel(notebook)

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
            if not self.in_progress.running(notebook_id):
                await self.kernels.discard(notebook_id)
