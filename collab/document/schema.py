"""The notebook document's schema: every key, the run state machine, kernel states, outputs
and symbols, in one place that every writer and reader names them from.

One Y.Doc per notebook (DESIGN.md "The document"; compatible with jupyter_ydoc's YNotebook):

- ``cells``: Y.Array of Y.Map {id, cell_type, source: Y.Text, metadata: Y.Map,
  outputs: Y.Array of Y.Map (a stream's ``text`` is a Y.Text), execution_count}
- ``meta``: Y.Map {nbformat, nbformat_minor, metadata: Y.Map {title, reactive,
  dependencies: Y.Array of str, environment, runtime, ...}}
- ``runs``: Y.Map cell id -> RunRecord (the executor's)
- ``symbols``: Y.Map cell id -> list of Symbol (the executor's)
- ``kernel``: Y.Map, a KernelStatus (the executor's; the status light)
- ``assist``: Y.Map cell id -> the assistant's mark (docs/assistant.md)

The web client names the same keys (web/src/notebook/model.js, runs.js, kernel.js);
tests/collab/test_schema.py compares them with this module.

Everything here is plain data: no CRDT binding, so any layer may import it. What a browser
wrote into these maps is hostile: readers go through ``run_record`` and friends, which give
``None`` for anything that is not the shape written here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final, Literal, NotRequired, TypedDict

# -- top-level names --------------------------------------------------------------------

CELLS: Final = "cells"
META: Final = "meta"
RUNS: Final = "runs"
SYMBOLS: Final = "symbols"
KERNEL: Final = "kernel"
ASSIST: Final = "assist"

# The top-level Y.Maps (``cells`` is the one Y.Array); an update naming any other root is
# refused (collab.sync.update_check).
MAP_ROOTS: Final = frozenset({META, RUNS, SYMBOLS, KERNEL, ASSIST})
ROOTS: Final = frozenset({CELLS, *MAP_ROOTS})
# Maps that describe a live session (its kernel, its runs, the names it holds), not content:
# a copy of the notebook leaves them out.
SESSION_MAPS: Final = (RUNS, SYMBOLS, KERNEL)

# -- a cell -----------------------------------------------------------------------------

CELL_ID: Final = "id"
CELL_TYPE: Final = "cell_type"
SOURCE: Final = "source"
METADATA: Final = "metadata"
OUTPUTS: Final = "outputs"
EXECUTION_COUNT: Final = "execution_count"
ATTACHMENTS: Final = "attachments"
CELL_KEYS: Final = (CELL_ID, CELL_TYPE, SOURCE, METADATA, OUTPUTS, EXECUTION_COUNT)

CELL_TYPES: Final = ("code", "markdown", "raw")
# In a cell's metadata: its language (code cells; default python) and a SQL cell's result name.
LANGUAGE: Final = "language"
DEFAULT_LANGUAGE: Final = "python"
OUTPUT_NAME: Final = "output_name"

# -- meta -------------------------------------------------------------------------------

NBFORMAT_KEY: Final = "nbformat"
NBFORMAT_MINOR_KEY: Final = "nbformat_minor"
TITLE: Final = "title"
# Notebook-wide switches in meta.metadata.
REACTIVE: Final = "reactive"
STOP_ON_ERROR: Final = "stop_on_error"
# The notebook's environment in meta.metadata (executor.environments): the requested packages
# (a Y.Array of PEP 508 strings, so concurrent adds and removes merge; older documents hold a
# plain list, read the same), the set they resolved to (written by the server), and the name
# of the runtime image it chose (one the server registers; none: the default).
DEPENDENCIES: Final = "dependencies"
ENVIRONMENT: Final = "environment"
RUNTIME: Final = "runtime"

# -- outputs (nbformat's) ---------------------------------------------------------------

OUTPUT_TYPE: Final = "output_type"
OutputType = Literal["stream", "display_data", "execute_result", "error"]


class StreamOutput(TypedDict):
    output_type: Literal["stream"]
    name: str  # stdout | stderr
    text: str  # a Y.Text in the document: it grows while the cell prints


class DisplayOutput(TypedDict):
    output_type: Literal["display_data"]
    data: dict[str, Any]
    metadata: dict[str, Any]


class ResultOutput(TypedDict):
    output_type: Literal["execute_result"]
    data: dict[str, Any]
    metadata: dict[str, Any]
    execution_count: int | None


class ErrorOutput(TypedDict):
    output_type: Literal["error"]
    ename: str
    evalue: str
    traceback: list[str]


Output = StreamOutput | DisplayOutput | ResultOutput | ErrorOutput

# -- symbols ----------------------------------------------------------------------------


class Symbol(TypedDict):
    """A name a cell's last run bound (the symbol table, the assistant's context)."""

    name: str
    type: str  # module.qualname of its value's type; "weft.cut" for the "N more" entry
    repr: str
    schema: NotRequired[dict[str, Any]]  # tables: columns, rows, a sample


SYMBOL_CUT_TYPE: Final = "weft.cut"

# -- runs: the state machine ------------------------------------------------------------


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    CANCELLED = "cancelled"


FINISHED: Final = frozenset({RunState.DONE, RunState.ERROR, RunState.CANCELLED})
ACTIVE: Final = frozenset({RunState.QUEUED, RunState.RUNNING})

# Which state a run may go to from which. A new run of a cell replaces the cell's record
# whatever it held (another run id): that is no transition. The same state again is a
# change of fields (stale, previous_kernel, symbols dropped), always allowed.
TRANSITIONS: Final[dict[RunState, frozenset[RunState]]] = {
    # claimed; cancelled (interrupt, restart, access lost, stop on error) or failed before
    # it started (no kernel, could not be queued, its executor died while claiming it)
    RunState.QUEUED: frozenset({RunState.RUNNING, RunState.CANCELLED, RunState.ERROR}),
    # an interrupted run ends as error (status "interrupted")
    RunState.RUNNING: frozenset({RunState.DONE, RunState.ERROR}),
    # its kernel sent a second `done`: the first was forged
    RunState.DONE: frozenset({RunState.ERROR}),
    RunState.ERROR: frozenset(),
    RunState.CANCELLED: frozenset(),
}


def may_become(current: RunState | None, new: RunState) -> bool:
    """Whether a run in state ``current`` may become ``new`` (None: no record of this run
    here yet, as on a server that has not seen its "queued": any state may come first)."""
    return current is None or new == current or new in TRANSITIONS[current]


class RunStatus(StrEnum):
    """How the runner says a cell ended (``done.status``): a finished run's ``status``."""

    OK = "ok"
    ERROR = "error"
    INTERRUPTED = "interrupted"


class RunRecord(TypedDict, total=False):
    """A cell's last run, as ``runs[cell_id]`` holds it (and the web client shows it)."""

    run_id: str
    state: RunState
    source_hash: str  # sha256 of the committed source, 16 hex digits ("edited since run")
    by: str | None  # the user id
    by_name: str | None  # the name to show
    reason: str  # user | run-all | run-below | run-stale | reactive
    queued_at: str  # ISO 8601, UTC
    started_at: str | None
    finished_at: str
    duration_ms: float
    execution_count: int
    status: str  # a RunStatus once finished
    error: str
    kernel: str  # the id of the kernel session it ran in
    stale: bool
    stale_because: str | None  # the cell whose run made it stale (None: a delete or a move)
    previous_kernel: bool  # the kernel it ran in is gone, and the names it bound


def run_state(value: Any) -> RunState | None:
    try:
        return RunState(value)
    except ValueError:
        return None


def run_record(value: Any) -> RunRecord | None:
    """``value`` (read from ``runs``) as a RunRecord, or None if it is not one."""
    if not isinstance(value, dict) or run_state(value.get("state")) is None:
        return None
    record: RunRecord = value  # type: ignore[assignment]  # checked: a dict with a state
    return record


# -- the kernel status light ------------------------------------------------------------


class KernelState(StrEnum):
    STARTING = "starting"
    PREPARING = "preparing"  # installing the notebook's dependencies (executor.environments)
    IDLE = "idle"
    BUSY = "busy"
    DEAD = "dead"


class KernelStatus(TypedDict):
    """``kernel``: the notebook's kernel, for everyone's status light."""

    state: KernelState
    since: str  # ISO 8601, UTC
    cell_id: NotRequired[str]  # while busy
    error: NotRequired[str]  # why it is dead
    restarted: NotRequired[bool]
    reason: NotRequired[str]  # why it was restarted (access lost, killed)
    # While preparing: the step, package and progress of the notebook's environment, and
    # the install log; on failure, the named error (executor.environments.errors).
    environment: NotRequired[dict[str, Any]]
    log: NotRequired[str]
    environment_error: NotRequired[dict[str, Any]]
    environment_ready: NotRequired[bool]
