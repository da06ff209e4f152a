"""No hidden state, on the host: each kernel's namespaces as the host knows them, the stale
marks after a run, a delete or a move, reactive re-runs, and what a NameError's name is
(docs/executor.md, "No hidden state")."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from collab.document import schema
from collab.document.schema import FINISHED, run_state
from collab.sync.peers import CellSnapshot, NotebookPeer, NotebookPeers
from executor.analysis import CodeCell, KernelNamespaces
from executor.in_progress import InProgress
from executor.kernel import Kernel
from executor.kernels import KernelPool
from executor.queue import Run, RunQueue
from executor.run_states import RunStates

log = logging.getLogger(__name__)


class Request(Protocol):
    """Executor.request: commit runs of (cell id, source) by a user, for a reason."""

    def __call__(
        self,
        notebook_id: uuid.UUID,
        cells: list[tuple[str, str | None]],
        *,
        by: str | None,
        reason: str = ...,
    ) -> Awaitable[list[uuid.UUID]]: ...


@dataclass(eq=False)
class KernelSession:
    """One kernel's namespaces as the host knows them (see analysis.KernelNamespaces)."""

    kernel: Kernel
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])
    names: KernelNamespaces = dataclasses.field(default_factory=KernelNamespaces)
    lock: anyio.Lock = dataclasses.field(default_factory=anyio.Lock)
    scope: anyio.CancelScope = dataclasses.field(default_factory=anyio.CancelScope)
    forget: set[str] = dataclasses.field(default_factory=set)  # deleted, not yet forgotten
    changed: list[str] | None = None  # the last `done`'s names whose binding changed


class KernelSessions:
    """The session of each notebook's kernel in this process, and the marks they make."""

    def __init__(
        self,
        notebooks: NotebookPeers,
        kernels: Callable[[], KernelPool],
        states: RunStates,
        queue: RunQueue,
        in_progress: InProgress,
        request: Request,
    ) -> None:
        self._notebooks = notebooks
        self._kernels = kernels  # the pool is replaced once Docker is reached
        self._states = states
        self._queue = queue
        self._in_progress = in_progress
        self._request = request
        self._sessions: dict[uuid.UUID, KernelSession] = {}
        self.tg: TaskGroup | None = None

    def get(self, notebook_id: uuid.UUID) -> KernelSession | None:
        return self._sessions.get(notebook_id)

    def session(
        self, notebook_id: uuid.UUID, kernel: Kernel, notebook: NotebookPeer
    ) -> KernelSession:
        """The host's record of `kernel`'s namespaces; a new kernel gets a new one, and every
        run state and symbol from an earlier kernel is marked as such (its names are gone)."""
        session = self._sessions.get(notebook_id)
        if session is not None and session.kernel is kernel:
            return session
        if session is not None:
            session.scope.cancel()
        session = KernelSession(kernel)
        self._sessions[notebook_id] = session
        self.mark_previous_kernel(notebook, keep=session.id)
        with contextlib.suppress(RuntimeError):  # the task group is shutting down
            if self.tg is not None:
                self.tg.start_soon(self._watch, notebook_id, session)
        return session

    # -- deletes and moves, while the kernel lives ----------------------------------------

    async def _watch(self, notebook_id: uuid.UUID, session: KernelSession) -> None:
        """While the kernel lives: mark stale at once the cells whose visible names a delete
        or a move changed, and forget deleted cells; when it is gone, say so everywhere."""

        def alive() -> bool:
            current = self._kernels().current(notebook_id)
            return current is session.kernel and session.kernel.alive

        wake = [anyio.Event()]
        with session.scope:
            try:
                while alive():
                    # The room watched is let go now and then: a room rebuilt from the log is
                    # a new document, and every look below opens the current one.
                    async with self._notebooks.open(notebook_id) as watched:
                        stop = watched.observe_cells(lambda _delta: wake[0].set())
                        # One look on opening (what changed while no room was watched, a
                        # room rebuilt from the log), then only when cells were inserted,
                        # deleted or moved: a look reads every cell, and an idle kernel's
                        # looks every 2 s were most of what an idle notebook cost the server.
                        wake[0].set()
                        try:
                            for _ in range(30):
                                with anyio.move_on_after(2.0):
                                    await wake[0].wait()
                                if not alive():
                                    break
                                if not wake[0].is_set():
                                    continue
                                wake[0] = anyio.Event()
                                await anyio.sleep(0.05)  # one burst of edits, one look
                                async with self._notebooks.open(notebook_id) as notebook:
                                    await self.sync_cells(notebook_id, notebook, session)
                        finally:
                            stop()
                if self._sessions.get(notebook_id) is session:
                    del self._sessions[notebook_id]
                async with self._notebooks.open(notebook_id) as notebook:
                    self.mark_previous_kernel(notebook, gone=session.id)
            except LookupError:
                pass  # the notebook was deleted
            except Exception:
                log.exception("watching the cells failed", extra={"notebook_id": str(notebook_id)})

    async def sync_cells(
        self, notebook_id: uuid.UUID, notebook: NotebookPeer, session: KernelSession
    ) -> None:
        """Bring the session up to the notebook's cells: deleted cells are forgotten (by the
        kernel when it is not running a cell: the next run's turn otherwise) and their run
        states and symbols dropped; cells whose visible names changed become stale."""
        async with session.lock:
            stale, gone = session.names.cells_changed(code_cells(notebook))
            session.forget.update(gone)
            with notebook.batch():
                for cell_id in gone:
                    notebook.forget(cell_id)
                self.mark_stale(notebook, stale, because=None)
            if session.forget and not self._in_progress.running(notebook_id):
                await self.send_forget(session)
        if stale and not self._in_progress.running(notebook_id):
            await self._react(notebook_id, notebook, stale, by=None)

    async def before_run(self, notebook_id: uuid.UUID, notebook: NotebookPeer) -> None:
        """Deleted cells are forgotten, and moves noted, before a run."""
        session = self._sessions.get(notebook_id)
        if session is not None:
            await self.sync_cells(notebook_id, notebook, session)
            if session.forget:
                await self.send_forget(session)

    async def send_forget(self, session: KernelSession) -> None:
        forget, session.forget = sorted(session.forget), set()
        await session.kernel.send({"type": "forget", "cell_ids": forget})

    # -- after a run ----------------------------------------------------------------------

    def ran(self, notebook_id: uuid.UUID, changed: list[str] | None) -> None:
        """The runner's `done.changed` for the run in progress (read by `after_run`)."""
        if (session := self._sessions.get(notebook_id)) is not None:
            session.changed = changed

    async def after_run(
        self, notebook: NotebookPeer, run: Run, status: str, defined: set[str]
    ) -> None:
        """Mark the cells whose visible names this run changed (successful or not) as stale;
        in reactive mode, re-run them in order, each with its last committed source. A failed
        run of run-all (or run-below, run-stale) cancels the rest when the notebook's
        `stop_on_error` is set, as Jupyter does."""
        stop = (
            status != "ok"
            and run.reason in ("run-all", "run-below", "run-stale")
            and bool(notebook.metadata().get(schema.STOP_ON_ERROR))
        )
        if stop:
            await self._states.cancel_queued(run.notebook_id)
        session = self._sessions.get(run.notebook_id)
        if session is None or not session.kernel.alive:
            return  # the kernel is gone, and every name with it
        changed, session.changed = session.changed, None
        async with session.lock:
            cells = code_cells(notebook)
            stale = session.names.ran(cells, run.cell_id, defined, changed)
            moved, gone = session.names.cells_changed(cells)  # edits made while it ran
            session.forget.update(gone)
            stale = [c.id for c in cells if c.id in {*stale, *moved}]
            with notebook.batch():
                for cell_id in gone:
                    notebook.forget(cell_id)
                self.mark_stale(notebook, stale, because=run.cell_id)
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
        if not stale or not notebook.metadata().get(schema.REACTIVE):
            return
        ids: dict[str, uuid.UUID] = {}
        for cell_id in stale:
            record = notebook.run(cell_id) or {}
            with contextlib.suppress(ValueError, TypeError):
                if run_state(record.get("state")) in FINISHED:
                    ids[cell_id] = uuid.UUID(str(record.get("run_id")))
        sources = await self._queue.sources(list(ids.values())) if ids else {}
        items: list[tuple[str, str | None]] = [
            (c, sources[ids[c]]) for c in stale if c in ids and ids[c] in sources
        ]
        if items:
            with contextlib.suppress(LookupError):  # a cell deleted meanwhile
                await self._request(notebook_id, items, by=by, reason="reactive")

    # -- marks --------------------------------------------------------------------------

    def mark_stale(self, notebook: NotebookPeer, cells: list[str], because: str | None) -> None:
        for cell_id in cells:
            current = notebook.run(cell_id)
            if (
                current
                and run_state(current.get("state")) in FINISHED
                and not current.get("previous_kernel")
            ):
                self._states.update(notebook, cell_id, stale=True, stale_because=because)

    def mark_previous_kernel(
        self, notebook: NotebookPeer, *, keep: str | None = None, gone: str | None = None
    ) -> None:
        """Runs (and their symbols) of a kernel that is gone: the kernel `gone`, or every
        kernel but `keep`, or (neither given) every kernel. Their outputs stay, marked as
        from a previous kernel; the names they bound no longer exist, so their symbols are
        dropped."""
        symbols = notebook.symbols()
        with notebook.batch():
            for cell_id, record in notebook.runs().items():
                kernel = record.get("kernel")
                if (keep is not None and kernel == keep) or (gone is not None and kernel != gone):
                    continue
                if run_state(record.get("state")) in FINISHED:
                    if not record.get("previous_kernel"):
                        self._states.update(notebook, cell_id, previous_kernel=True)
                    if symbols.get(cell_id):
                        notebook.set_symbols(cell_id, [])

    # -- a NameError, explained -------------------------------------------------------------

    def explain_name_error(
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


def code_cells(notebook: NotebookPeer) -> list[CodeCell]:
    return [_code_cell(c) for c in notebook.cells() if c.cell_type == "code"]


def _code_cell(cell: CellSnapshot) -> CodeCell:
    return CodeCell(cell.id, cell.source, cell.language, _output_name(cell.metadata))


def _output_name(metadata: dict[str, Any]) -> str | None:
    name = metadata.get(schema.OUTPUT_NAME)
    return name if isinstance(name, str) and name else None


def _cell_defines(cell: CellSnapshot) -> set[str]:
    return _code_cell(cell).defines()
