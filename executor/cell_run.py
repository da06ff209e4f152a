"""One run's life on a worker: prepare -> kernel -> drive -> finish.

- prepare: the notebook's workspace (its filesystem may be made and mounted now), whether
  its kernels may reach the network, the notebook caught up with the log, the cell;
- kernel: the notebook's kernel, started if needed; the run shows "running";
- drive: the run sent to the runner, its messages followed to `done` (each message type has
  its handler: `CellRun.HANDLERS`), within the wall-time limit;
- finish: execution count, the run's end, its symbols and the kernel's state in the
  document, the row in PostgreSQL; then the stale marks (and reactive re-runs).

The worker loops that claim runs and start this are in ``executor.worker``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypedDict

import anyio
from prometheus_client import Counter, Histogram

from collab.document.schema import DEPENDENCIES, KernelState, KernelStatus, RunRecord, RunState
from collab.errors import NotFound
from collab.storage.database import DATABASE_ERRORS
from collab.sync.peers import CellSnapshot, NotebookPeer, NotebookPeers
from executor.config import ExecutorSettings
from executor.environments import EnvironmentFailure, Environments, Prepared
from executor.environments.pip_magic import installed_note, pip_installs
from executor.environments.requirements import with_requirement
from executor.files import FileStore
from executor.in_progress import InProgress
from executor.kernel import Kernel, KernelError
from executor.kernels import KernelPool
from executor.outputs import OutputLimits, OutputWriter, cap_symbols
from executor.phases import Phases
from executor.queue import Run
from executor.run_states import RunStates, now, source_hash
from executor.sessions import KernelSessions
from executor.volumes import VolumeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """What every run on this worker shares."""

    settings: ExecutorSettings
    files: FileStore
    kernels: Callable[[], KernelPool]
    notebooks: NotebookPeers
    states: RunStates
    sessions: KernelSessions
    in_progress: InProgress
    limits: OutputLimits
    run_seconds: Histogram
    catch_ups: Counter  # runs whose "queued" had not reached this server: they caught up
    environments: Environments


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended: the runner's status, the names its namespace now holds, its symbols
    (None: none reported, the kernel is gone) and the error to show."""

    status: str
    defined: set[str]
    symbols: list[dict[str, Any]] | None
    error: str | None


def _failed(reason: str) -> Outcome:
    return Outcome("error", set(), None, reason)


@dataclass(frozen=True, slots=True)
class Live:
    """What a run in progress writes to and reads from."""

    notebook: NotebookPeer
    kernel: Kernel
    writer: OutputWriter


Message = dict[str, Any]  # one runner message, checked by executor.protocol
_Handler = Callable[["CellRun", Live, Message], "Outcome | None"]


class CellRun:
    """One claimed run, from its claim to its end."""

    def __init__(self, context: RunContext, run: Run) -> None:
        self.c = context
        self.run = run
        self.extra = {
            "notebook_id": str(run.notebook_id),
            "run_id": str(run.id),
            "cell_id": run.cell_id,
            "user_id": run.requested_by,
        }
        self.base: RunRecord = {
            "run_id": str(run.id),
            "source_hash": source_hash(run.source),
            "by": run.requested_by,
            "by_name": run.requested_by_name,
            "reason": run.reason,
        }
        self._interrupted_for_time = False
        self.phases = Phases()  # from the claim; logged with "run finished"

    @property
    def kernels(self) -> KernelPool:
        return self.c.kernels()

    async def execute(self) -> None:
        prepared = await self._prepare()
        if prepared is None:
            return
        workspace_dir, network = prepared
        self.phases.mark("prepare")
        async with contextlib.AsyncExitStack() as stack:
            try:
                notebook = await stack.enter_async_context(
                    self.c.notebooks.open(self.run.notebook_id)
                )
            except NotFound:  # deleted since the claim (its row went with it)
                log.info("run dropped: its notebook was deleted", extra=self.extra)
                return
            cell = await self._cell(notebook)
            self.phases.mark("catch_up")
            if cell is None:
                return
            started = time.monotonic()
            writer = OutputWriter(notebook, self.run.cell_id, self.c.limits)
            environment = await self._environment(notebook, writer)
            self.phases.mark("environment")
            if environment is None:
                return
            pip_note, prepared_environment = environment
            kernel = await self._kernel(
                notebook, writer, workspace_dir, network, prepared_environment
            )
            self.phases.mark("kernel")
            if kernel is None:
                return
            self._begin(notebook, kernel)
            outcome = await self._drive(notebook, kernel, writer, pip_note)
            self.phases.mark("drive")
            await self._finish(notebook, kernel, writer, outcome, started)
            await self.c.sessions.after_run(notebook, self.run, outcome.status, outcome.defined)

    # -- prepare ------------------------------------------------------------------------

    async def _prepare(self) -> tuple[Path, bool] | None:
        """The workspace's directory and network setting (both read with the claim:
        executor.queue); None if the run cannot go on."""
        run = self.run
        if run.workspace_id is None:
            raise RuntimeError(
                "a run is executed only once claimed (its claim reads its workspace)"
            )
        try:
            # Off the loop: the workspace's filesystem may be made and mounted now.
            workspace_dir = await anyio.to_thread.run_sync(
                self.c.files.workspace_root, run.workspace_id
            )
        except VolumeError as exc:
            await self.fail(str(exc), row_error=str(exc))
            return None
        return workspace_dir, run.network_allowed

    async def _cell(self, notebook: NotebookPeer) -> CellSnapshot | None:
        if not self._queued_here(notebook):
            # The run's "queued" (and its cell) came from another server and has not reached
            # this one yet: apply the log before writing over it (see RunStates.commit).
            self.c.catch_ups.inc()
            try:
                await notebook.catch_up()
            except DATABASE_ERRORS as exc:
                log.warning("run: could not catch up with the log: %s", exc, extra=self.extra)
        cell = notebook.cell(self.run.cell_id)
        if cell is None:
            await self.c.states.end(None, self.run, None, row_error="the cell was deleted")
        return cell

    def _queued_here(self, notebook: NotebookPeer) -> bool:
        """This server's copy of the document already shows this run queued (the common
        case: this server queued it, or the feed brought it). "running" written now then
        follows "queued" instead of racing it, so the catch-up (a round trip to the log on
        every run) is not needed."""
        current = notebook.run(self.run.cell_id)
        return (
            current is not None
            and current.get("run_id") == str(self.run.id)
            and current.get("state") == RunState.QUEUED
        )

    # -- environment (executor.environments) --------------------------------------------

    async def _environment(
        self, notebook: NotebookPeer, writer: OutputWriter
    ) -> tuple[str | None, Prepared] | None:
        """What the cell's `%pip install` lines print (they add to the notebook's
        dependencies first), and the environment prepared for the run; None if the run
        ended here (the dependencies cannot be installed: the error names which and why)."""
        run = self.run
        try:
            pip_note = pip_dependencies(notebook, run)
            client = self.kernels.client
            if client is None:  # the run fails on the missing engine with its own message
                return pip_note, Prepared(None, None)
            return pip_note, await self.c.environments.prepare(notebook, client)
        except EnvironmentFailure as failure:
            message = failure.message

        def show() -> None:
            notebook.clear_outputs(run.cell_id)
            writer.error("DependencyError", message, [message])

        record: RunRecord = {
            **self.base,
            "state": RunState.ERROR,
            "error": message,
            "finished_at": now(),
        }
        await self.c.states.end(notebook, run, record, outputs=writer, with_it=show)
        log.warning("run failed: environment", extra={**self.extra, "error": message})
        return None

    # -- kernel -------------------------------------------------------------------------

    async def _kernel(
        self,
        notebook: NotebookPeer,
        writer: OutputWriter,
        workspace_dir: Path,
        network: bool,
        environment: Prepared,
    ) -> Kernel | None:
        """The notebook's kernel, started if needed (or restarted for another package set);
        None if the run ended here (no kernel, or interrupted before it started)."""
        run = self.run
        kernel = self.kernels.current(run.notebook_id)
        restart = environment_restart(kernel, environment, self.c.settings.image)
        if kernel is None or not kernel.alive or restart:
            starting: KernelStatus = {"state": KernelState.STARTING, "since": now()}
            notebook.set_kernel({**starting, **restart})
        try:
            kernel = await self.kernels.get(
                run.notebook_id, workspace_dir, network, environment.mount, environment.image
            )
        except KernelError as exc:
            reason = str(exc)

            def show() -> None:
                notebook.clear_outputs(run.cell_id)
                writer.error("KernelError", reason, [reason])
                notebook.set_kernel({"state": KernelState.DEAD, "since": now(), "error": reason})

            record: RunRecord = {
                **self.base,
                "state": RunState.ERROR,
                "error": reason,
                "finished_at": now(),
            }
            await self.c.states.end(notebook, run, record, outputs=writer, with_it=show)
            log.warning("run failed: no kernel", extra={**self.extra, "error": reason})
            return None
        if run.notebook_id in self.c.in_progress.interrupted:
            cancelled: RunRecord = {**self.base, "state": RunState.CANCELLED, "finished_at": now()}
            await self.c.states.end(
                notebook,
                run,
                cancelled,
                row_error="interrupted before it started",
                with_it=lambda: notebook.set_kernel({"state": KernelState.IDLE, "since": now()}),
            )
            return None
        return kernel

    def _begin(self, notebook: NotebookPeer, kernel: Kernel) -> None:
        """The run is running, in this kernel's session, and its author's right to run code
        is watched from now on."""
        run = self.run
        self.base["kernel"] = self.c.sessions.session(run.notebook_id, kernel, notebook).id
        with notebook.batch():
            notebook.clear_outputs(run.cell_id)
            self.c.states.started(notebook, run, self.base)
            notebook.set_kernel({"state": KernelState.BUSY, "since": now(), "cell_id": run.cell_id})
        if run.requested_by is not None:
            known = kernel.ran_by.get(run.requested_by, (None, None))
            kernel.ran_by[run.requested_by] = (
                run.requested_link or known[0],
                run.requested_by_name or known[1],
            )
        log.info("run started", extra=self.extra)

    # -- drive --------------------------------------------------------------------------

    async def _drive(
        self,
        notebook: NotebookPeer,
        kernel: Kernel,
        writer: OutputWriter,
        pip_note: str | None,
    ) -> Outcome:
        """Send the run and follow its messages to the end, enforcing the wall-time limit."""
        run = self.run
        ids = [c.id for c in notebook.cells()]
        visible = ids[: ids.index(run.cell_id)] if run.cell_id in ids else ids
        await self.c.sessions.before_run(run.notebook_id, notebook)
        cell = notebook.cell(run.cell_id)  # as it is now: the sessions' look may have awaited
        kernel.begin(str(run.id), run.cell_id)
        try:
            if not await self._send(kernel, visible, cell, pip_note):
                reason = "the kernel stopped reading what it is sent; the kernel was restarted"
                await self.kernels.discard(run.notebook_id)
                writer.error("KernelDied", reason, [reason])
                return _failed(reason)
            return await self._follow(Live(notebook, kernel, writer))
        finally:
            kernel.end()

    async def _send(
        self,
        kernel: Kernel,
        visible: list[str],
        cell: CellSnapshot | None,
        pip_note: str | None,
    ) -> bool:
        """Send the run; False if the runner did not take it within the time limit."""
        run = self.run
        # A runner that stopped reading its input (cell code can make it) must not hold the
        # run past its time limit.
        with anyio.move_on_after(self.c.settings.cell_timeout_s) as sending:
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
        return not sending.cancelled_caught

    async def _follow(self, live: Live) -> Outcome:
        kernel, writer = live.kernel, live.writer
        deadline = anyio.current_time() + self.c.settings.cell_timeout_s
        while True:
            timed_out, message = await self._next(kernel, deadline)
            if timed_out and anyio.current_time() < deadline:
                if self.run.notebook_id in self.c.in_progress.interrupted:
                    await kernel.interrupt()
                continue
            if timed_out:
                if self._interrupted_for_time:
                    return await self._kill_for_time(writer)
                self._interrupted_for_time = True
                await kernel.interrupt()
                deadline = anyio.current_time() + self.c.settings.interrupt_grace_s
                continue
            if message is None:  # the runner died, or broke the protocol
                return await self._kernel_died(kernel, writer)
            # Checked by the kernel (executor.protocol): the shapes hold, and it is this run's.
            outcome = self.HANDLERS[message["type"]](self, live, message)
            if outcome is not None:
                return outcome

    async def _next(self, kernel: Kernel, deadline: float) -> tuple[bool, dict[str, Any] | None]:
        """(timed out, the next message or None once the runner is gone). Wakes at least
        every second: an interrupt sent before the runner started the cell is ignored by
        it, so it is repeated until the cell ends."""
        remaining = deadline - anyio.current_time()
        with anyio.move_on_after(max(min(remaining, 1.0), 0)):
            return False, await kernel.receive()
        return True, None

    async def _kernel_died(self, kernel: Kernel, writer: OutputWriter) -> Outcome:
        notebook_id = self.run.notebook_id
        if notebook_id in self.c.in_progress.restarted:
            reason = self.c.in_progress.restarted[notebook_id]
        elif kernel.violation is not None:
            reason = f"{kernel.violation}; the kernel was stopped"
        else:
            reason = await kernel.death_reason(self.c.settings.memory_mb)
        await self.kernels.discard(notebook_id)
        ename = "KernelDied" if kernel.violation is None else "ProtocolError"
        writer.error(ename, reason, [reason])
        return _failed(reason)

    async def _kill_for_time(self, writer: OutputWriter) -> Outcome:
        reason = (
            f"the cell ran past its {self.c.settings.cell_timeout_s:g} s limit and did not "
            "stop when interrupted; the kernel was restarted"
        )
        await self.kernels.discard(self.run.notebook_id)
        writer.error("TimeoutError", reason, [reason])
        return _failed(reason)

    def _on_stream(self, live: Live, message: Message) -> None:
        live.writer.stream(message["name"], message["text"])

    def _on_display(self, live: Live, message: Message) -> None:
        live.writer.add(
            {
                "output_type": "display_data",
                "data": message["data"],
                "metadata": message["metadata"],
            }
        )

    def _on_result(self, live: Live, message: Message) -> None:
        live.writer.add(
            {
                "output_type": "execute_result",
                "data": message["data"],
                "metadata": message["metadata"],
                "execution_count": live.kernel.execution_count + 1,
            }
        )

    def _on_error(self, live: Live, message: Message) -> None:
        evalue = message["evalue"] + self._limit_hint(message)
        traceback = message["traceback"]
        if message["ename"] == "NameError":
            evalue, traceback = self.c.sessions.explain_name_error(
                live.notebook, self.run, evalue, traceback
            )
        live.writer.error(message["ename"], evalue, traceback)

    def _on_done(self, live: Live, message: Message) -> Outcome:
        status = str(message.get("status", "error"))
        error = None
        if self._interrupted_for_time:
            error = (
                f"the cell ran past its {self.c.settings.cell_timeout_s:g} s limit and was "
                "interrupted"
            )
            live.writer.error("TimeoutError", error, [error])
        elif status == "interrupted":
            error = "interrupted"
        elif status == "error":
            error = "the cell raised an exception"
        self.c.sessions.ran(self.run.notebook_id, message.get("changed"))
        return Outcome(status, set(message["defined"]), list(message["symbols"]), error)

    # Runner message type -> what it does to the cell (an Outcome ends the run).
    HANDLERS: ClassVar[dict[str, _Handler]] = {
        "stream": _on_stream,
        "display": _on_display,
        "result": _on_result,
        "error": _on_error,
        "done": _on_done,
    }

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
                f" (the kernel reached its limit of {self.c.settings.pids} processes and "
                "threads, WEFT_KERNEL_PIDS; threads or processes that earlier cells started "
                "count too: stop them or restart the kernel)"
            )
        return ""

    # -- finish -------------------------------------------------------------------------

    async def _finish(
        self,
        notebook: NotebookPeer,
        kernel: Kernel,
        writer: OutputWriter,
        outcome: Outcome,
        started: float,
    ) -> None:
        run = self.run
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        state = RunState.DONE if outcome.status == "ok" else RunState.ERROR
        kernel.execution_count += 1
        count = kernel.execution_count
        record: RunRecord = {
            **self.base,
            "state": state,
            "status": outcome.status,
            "started_at": (notebook.run(run.cell_id) or {}).get("started_at"),
            "finished_at": now(),
            "duration_ms": duration_ms,
            "execution_count": count,
        }
        if outcome.error:
            record["error"] = outcome.error
        if not kernel.alive:  # the kernel died or was replaced: what the run bound is gone
            record["previous_kernel"] = True

        def with_it() -> None:
            notebook.set_execution_count(run.cell_id, count)
            if outcome.symbols is not None:
                symbols = cap_symbols(outcome.symbols, self.c.settings.symbols_max_bytes)
                notebook.set_symbols(run.cell_id, symbols)
            alive = KernelState.IDLE if kernel.alive else KernelState.DEAD
            notebook.set_kernel({"state": alive, "since": now()})

        await self.c.states.end(
            notebook,
            run,
            record,
            outputs=writer,
            execution_count=count,
            with_it=with_it,
        )
        self.c.run_seconds.labels(state=state).observe(duration_ms / 1000)
        self.phases.mark("finish")
        log.info(
            "run finished",
            extra={
                **self.extra,
                "status": outcome.status,
                "duration_ms": duration_ms,
                "phases_ms": self.phases.ms,
            },
        )

    # -- failed inside the executor -----------------------------------------------------

    async def fail(self, reason: str, *, row_error: str | None) -> None:
        """The cell shows that its run failed (never "running" forever), and the kernel,
        in a state no one can vouch for, is replaced."""
        run = self.run
        try:
            await self.kernels.discard(run.notebook_id)
            async with self.c.notebooks.open(run.notebook_id) as notebook:
                dead: KernelStatus = {"state": KernelState.DEAD, "since": now(), "error": reason}
                await self.c.states.failed(
                    notebook,
                    run,
                    reason,
                    row_error=row_error,
                    with_it=lambda: notebook.set_kernel(dead),
                )
        except Exception:
            log.exception("could not mark a failed run", extra={"run_id": str(run.id)})


class RestartNote(TypedDict, total=False):
    restarted: bool
    reason: str


def environment_restart(
    kernel: Kernel | None, environment: Prepared, default_image: str
) -> RestartNote:
    """The kernel status's note when a live kernel must make way for another runtime image
    or another package set."""
    if kernel is None or not kernel.alive:
        return {}
    if (kernel.image or default_image) != (environment.image or default_image):
        return {
            "restarted": True,
            "reason": "the runtime changed: the kernel was restarted from the image "
            f"{environment.image or default_image}, and the names earlier runs defined are gone",
        }
    if kernel.environment == environment.key:
        return {}
    return {
        "restarted": True,
        "reason": "the dependencies changed: the kernel was restarted with the new "
        "environment, and the names earlier runs defined are gone",
    }


def pip_dependencies(notebook: NotebookPeer, run: Run) -> str | None:
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
        notebook.set_metadata_list(DEPENDENCIES, list(dependencies or []))
        log.info(
            "dependencies added by %%pip",
            extra={"notebook_id": str(run.notebook_id), "user_id": run.requested_by},
        )
    return installed_note(added, replaced)
