"""The worker loops: claim runs (each then lives in ``executor.cell_run``), renew their
leases and fail those of dead workers, reap idle kernels, apply interrupts and restarts
from any server, and restart the kernels of people who lost access."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from typing import Any

import anyio
import asyncpg

from collab.auth.access import Role, notebook_role
from collab.auth.accounts import Identity
from collab.background import BackgroundService
from collab.document.schema import KernelState
from collab.errors import NotFound
from collab.storage.database import DATABASE_ERRORS
from executor.cell_run import CellRun, RunContext
from executor.kernel import Kernel
from executor.queue import Run, RunQueue
from executor.run_states import now

log = logging.getLogger(__name__)

_POLL_S = 1.0
_REAP_EVERY_S = 30.0


class Worker(BackgroundService):
    """Claims runs and holds kernels while it runs (``async with worker:``): its loops
    claim, renew leases, reap idle kernels, apply interrupts and restarts and check access;
    each run is one of its tasks (collab.background: a loop that fails is logged and started
    again, a run's failure is logged)."""

    name = "executor worker"

    def __init__(self, context: RunContext, queue: RunQueue, pool: asyncpg.Pool) -> None:
        self.c = context
        self.queue = queue
        self._pool = pool
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._wake = anyio.Event()
        self._controls: list[tuple[str, uuid.UUID, str]] = []
        self._control_wake = anyio.Event()
        self._access_wake = anyio.Event()
        self.queue_depth = 0  # sampled by the lease loop, for weft_run_queue_depth

    @property
    def _running(self) -> dict[uuid.UUID, Run]:
        return self.c.in_progress.runs

    async def start(self) -> None:
        self.loop(self._claim_loop)
        self.loop(self._lease_loop)
        self.loop(self._reap_loop)
        self.loop(self._control_loop)
        self.loop(self._access_loop)

    def wake(self, *_args: Any) -> None:
        """A run was queued (NOTIFY weft_runs, or this server's own commit)."""
        self._wake.set()

    # -- claim ----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while True:
            self._wake = anyio.Event()
            while len(self._running) < self.c.settings.max_kernels:
                try:
                    run = await self.queue.claim(
                        self.id, self.c.settings.lease_s, busy=list(self._running)
                    )
                except DATABASE_ERRORS as exc:
                    log.warning("claiming runs failed: %s", exc)
                    run = None
                if run is None:
                    break
                self._running[run.notebook_id] = run
                self.task(self._execute, run)
            with anyio.move_on_after(_POLL_S):
                await self._wake.wait()

    async def _execute(self, run: Run) -> None:
        extra = {"notebook_id": str(run.notebook_id), "run_id": str(run.id), "cell_id": run.cell_id}
        kernels = self.c.kernels()
        kernels.busy.add(run.notebook_id)
        cell_run = CellRun(self.c, run)
        try:
            await cell_run.execute()
        except Exception:
            log.exception("run failed inside the executor", extra=extra)
            with anyio.CancelScope(shield=True):
                await cell_run.fail(
                    "internal executor error; run the cell again",
                    row_error="internal executor error",
                )
        finally:
            kernels.busy.discard(run.notebook_id)
            self.c.in_progress.ended(run.notebook_id)
            self._wake.set()

    # -- leases ---------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        while True:
            await anyio.sleep(self.c.settings.lease_s / 3)
            try:
                await self.queue.renew(
                    self.id, [r.id for r in self._running.values()], self.c.settings.lease_s
                )
                self.queue_depth = await self.queue.depth()
                for row in await self.c.states.expire_leases():
                    log.warning(
                        "run failed: its executor stopped",
                        extra={"notebook_id": str(row["notebook_id"]), "run_id": str(row["id"])},
                    )
            except DATABASE_ERRORS as exc:
                log.warning("renewing run leases failed: %s", exc)

    async def _reap_loop(self) -> None:
        while True:
            await anyio.sleep(min(_REAP_EVERY_S, self.c.settings.idle_timeout_s))
            await self.c.kernels().reap_idle()

    # -- interrupts and restarts, from whichever server took the request ------------------

    def controlled(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        """An interrupt or restart for a notebook (NOTIFY weft_run_control)."""
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
        kernels = self.c.kernels()
        running = notebook_id in self._running
        if action == "interrupt":
            if running:
                # The run may still be starting its kernel: the flag stops it as soon as it
                # can, and the run repeats SIGINT until the runner acknowledges it.
                self.c.in_progress.interrupted.add(notebook_id)
                kernel = kernels.current(notebook_id)
                if kernel is not None and kernel.alive:
                    await kernel.interrupt()
        else:
            if running:
                self.c.in_progress.restarted[notebook_id] = (
                    note or "the kernel was restarted while this cell ran"
                )
            if kernels.current(notebook_id) is not None or running:
                await kernels.discard(notebook_id)

    # -- a kernel that broke the protocol -------------------------------------------------

    def kernel_stopped(self, kernel: Kernel) -> None:
        """A kernel's reader stopped. If it broke the protocol, remove it and say why in the
        notebook (a run in progress says so itself: see CellRun)."""
        if kernel.violation is None or not self.started:
            return
        self.task(self._after_violation, kernel)

    async def _after_violation(self, kernel: Kernel) -> None:
        notebook_id = kernel.notebook_id
        reason = f"{kernel.violation}; the kernel was stopped"
        log.warning("kernel stopped: %s", reason, extra={"notebook_id": str(notebook_id)})
        await self.c.kernels().discard(notebook_id, kernel)

        def dead() -> None:
            if notebook_id not in self._running:
                notebook.set_kernel({"state": KernelState.DEAD, "since": now(), "error": reason})

        with contextlib.suppress(LookupError):
            async with self.c.notebooks.open(notebook_id) as notebook:
                if kernel.forged_run is None:
                    dead()
                    return
                run_id, cell_id = kernel.forged_run
                await self.c.states.forged(notebook, run_id, cell_id, reason, with_it=dead)

    # -- losing access ends the code one ran ----------------------------------------------

    def access_changed(self, *_args: Any) -> None:
        """Someone's access may have shrunk (collab.auth.access_watch announces it)."""
        self._access_wake.set()

    async def _access_loop(self) -> None:
        """Restart every kernel held here in which someone ran code who may no longer: the
        threads, patches and processes their code left there must not outlive their right."""
        while True:
            await self._access_wake.wait()
            self._access_wake = anyio.Event()
            await anyio.sleep(0.2)  # a burst of changes is checked once
            for kernel in self.c.kernels().held():
                try:
                    lost = [
                        (user_id, name)
                        for user_id, (link, name) in list(kernel.ran_by.items())
                        if not await self._may_run(kernel.notebook_id, user_id, link)
                    ]
                    if lost:
                        await self._restart_for_access(kernel, lost)
                except DATABASE_ERRORS as exc:
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
        if link is None:  # a reactive run carries no link: a guest has one, members none
            link = await self._pool.fetchval(
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
            _, role = await notebook_role(self._pool, identity, notebook_id)
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
            await self.c.states.cancel_queued(notebook_id, by=user_id)
        if notebook_id in self._running:
            self.c.in_progress.restarted[notebook_id] = reason
        await self.c.kernels().discard(notebook_id, kernel)
        with contextlib.suppress(LookupError):
            async with self.c.notebooks.open(notebook_id) as notebook:
                with notebook.batch():
                    notebook.set_kernel(
                        {
                            "state": KernelState.IDLE,
                            "since": now(),
                            "restarted": True,
                            "reason": reason,
                        }
                    )
                    self.c.sessions.mark_previous_kernel(notebook)
