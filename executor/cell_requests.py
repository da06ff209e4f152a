"""What people ask a notebook's kernel while they edit and read: completions and call
signatures for a cell (editors), and pages of a DataFrame shown in an output (anyone who
sees the output, viewers too).

Each request is bounded before it reaches the kernel (the code's size, the page's size, a
rate per person and kernel, a few requests waiting per kernel: executor.kernel_requests) so
that nobody can keep a kernel busy for the people running cells in it. A cell sees only what
the cells above it define, and so do its completions: the kernel is given the same
`visible` list a run of that cell would get.

A grid's view (sort, filter, page) is shared: whoever changes it writes it into the
document next to the output (the output's ``view`` field), so everyone looking at the output
sees the same rows; each browser asks the kernel for that page itself. The document holds
the first page only (in the output's data); no other rows are ever stored or broadcast.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from collab.errors import BadRequest, Conflict, Gone, NotFound, TooManyRequests, WeftError
from collab.sync.peers import NotebookPeer, open_notebook
from executor.kernel import Kernel
from executor.kernel_requests import KernelRefused, KernelRequestError
from executor.service import Executor

log = logging.getLogger(__name__)

FRAME_MIME = "application/vnd.weft.frame+json"
MAX_CODE_CHARS = 100_000  # the editor sends at most the 10,000 characters before the cursor
COMPLETE_TIMEOUT_S = 5.0
PAGE_TIMEOUT_S = 15.0
MAX_PAGE_ROWS = 200
MAX_SORT_KEYS = 3
MAX_FILTERS = 8
MAX_FILTER_VALUE_CHARS = 200
FILTER_OPS = ("==", "!=", "<", "<=", ">", ">=", "contains", "startswith", "is_null", "not_null")


@dataclass(frozen=True)
class Rate:
    per_second: float
    burst: int


# Typing asks for completions often; paging is a click. Both per person and kernel.
COMPLETE_RATE = Rate(per_second=10, burst=30)
PAGE_RATE = Rate(per_second=4, burst=12)


class RateLimiter:
    """Token buckets by key, in memory (a kernel lives in one process), bounded in size."""

    def __init__(self, rate: Rate, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: OrderedDict[Any, tuple[float, float]] = OrderedDict()

    def take(self, key: Any, what: str) -> None:
        now = time.monotonic()
        tokens, at = self._buckets.pop(key, (float(self.rate.burst), now))
        tokens = min(self.rate.burst, tokens + (now - at) * self.rate.per_second)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            wait = (1 - tokens) / self.rate.per_second
            raise TooManyRequests(
                f"too many {what} requests ({self.rate.per_second:g} a second per person and "
                f"kernel); wait {wait:.1f} s",
                retry_after=wait,
            )
        self._buckets[key] = (tokens - 1, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)


class KernelTimeout(WeftError):
    status = 504
    code = "kernel_timeout"


class CellRequests:
    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.complete_rate = RateLimiter(COMPLETE_RATE)
        self.page_rate = RateLimiter(PAGE_RATE)

    def _kernel(self, notebook_id: uuid.UUID) -> tuple[Kernel, str]:
        live = self.executor.live_kernel(notebook_id)
        if live is None:
            raise Conflict(
                "no kernel is running for this notebook (it was restarted, reaped when idle, "
                "or never started): run a cell first"
            )
        return live

    async def _ask(
        self,
        kernel: Kernel,
        kind: str,
        payload: dict[str, Any],
        wait_s: float,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        started = time.monotonic()
        try:
            result: dict[str, Any] = await kernel.requests.ask(kernel.send, kind, payload, wait_s)
        except KernelRefused as exc:
            raise BadRequest(exc.message) from None
        except KernelRequestError as exc:
            log.info("kernel request failed", extra={**extra, "kind": kind, "error": exc.message})
            if exc.retry and "waiting" in exc.message:
                raise TooManyRequests(exc.message, retry_after=1.0) from None
            if exc.retry:
                raise KernelTimeout(exc.message) from None
            raise Conflict(exc.message) from None
        log.info(
            "kernel request",
            extra={**extra, "kind": kind, "ms": round((time.monotonic() - started) * 1000, 1)},
        )
        return result

    async def complete(
        self,
        notebook_id: uuid.UUID,
        cell_id: str,
        user_id: uuid.UUID,
        kind: str,
        body: dict[str, Any],
    ) -> dict[str, Any]:
        """Completions (``kind`` "complete") or the call signature ("signature") at the end
        of ``code``, the cell's text before the cursor (or up to ``cursor``)."""
        code = body.get("code")
        if not isinstance(code, str):
            raise BadRequest("'code' must be the cell's text before the cursor (a string)")
        if len(code) > MAX_CODE_CHARS:
            raise BadRequest(
                f"'code' is {len(code):,} characters; send at most {MAX_CODE_CHARS:,} (the text "
                "before the cursor is enough)"
            )
        cursor = body.get("cursor", len(code))
        if not isinstance(cursor, int) or isinstance(cursor, bool) or not 0 <= cursor <= len(code):
            raise BadRequest(f"'cursor' must be a position from 0 to {len(code)} in 'code'")
        kernel, _ = self._kernel(notebook_id)
        self.complete_rate.take((user_id, notebook_id), "completion")
        visible = await self._visible(notebook_id, cell_id)
        extra = {"notebook_id": str(notebook_id), "user_id": str(user_id), "cell_id": cell_id}
        payload = {"code": code[:cursor], "visible": visible}
        return await self._ask(kernel, kind, payload, COMPLETE_TIMEOUT_S, extra)

    async def _visible(self, notebook_id: uuid.UUID, cell_id: str) -> list[str]:
        """The cells above this one, top to bottom: what a run of it would see."""
        async with open_notebook(self.executor.services.rooms, notebook_id) as notebook:
            ids = [c.id for c in notebook.cells()]
        if cell_id not in ids:
            raise NotFound(f"no cell {cell_id[:80]} in this notebook")
        return ids[: ids.index(cell_id)]

    async def frame_page(
        self,
        notebook_id: uuid.UUID,
        cell_id: str,
        user_id: uuid.UUID,
        by_name: str,
        body: dict[str, Any],
    ) -> dict[str, Any]:
        """One page of the frame ``ref`` shown in this cell's outputs, in a view (sort,
        filter); with ``share`` the view becomes everyone's (written next to the output)."""
        ref = body.get("ref")
        if not isinstance(ref, str) or not 0 < len(ref) <= 64:
            raise BadRequest("'ref' must be the frame's ref from the output")
        view = check_view(body)
        share = body.get("share", False)
        if not isinstance(share, bool):
            raise BadRequest("'share' must be true or false")
        self.page_rate.take((user_id, notebook_id), "page")
        extra = {"notebook_id": str(notebook_id), "user_id": str(user_id), "cell_id": cell_id}
        async with open_notebook(self.executor.services.rooms, notebook_id) as notebook:
            index = _frame_output(notebook, cell_id, ref)
            kernel, kernel_id = self._kernel_of_output(notebook, notebook_id, cell_id)
            page = await self._ask(
                kernel, "frame_page", {"ref": ref, **view}, PAGE_TIMEOUT_S, extra
            )
            if share and _frame_output(notebook, cell_id, ref) == index:
                shared = {
                    **view,
                    "ref": ref,
                    "by": str(user_id),
                    "by_name": by_name,
                    "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                }
                notebook.set_output_field(cell_id, index, "view", shared)
        return {**page, "kernel": kernel_id}

    def _kernel_of_output(
        self, notebook: NotebookPeer, notebook_id: uuid.UUID, cell_id: str
    ) -> tuple[Kernel, str]:
        state = notebook.run(cell_id) or {}
        live = self.executor.live_kernel(notebook_id)
        if live is None or state.get("previous_kernel") or state.get("kernel") != live[1]:
            raise Gone(
                "the kernel that made this table is gone (restarted, or reaped when idle): run "
                "its cell again to sort, filter or page it"
            )
        return live


def _frame_output(notebook: NotebookPeer, cell_id: str, ref: str) -> int:
    """The index of the output of this cell that shows frame ``ref``: a page is asked only
    of a frame that everyone who sees the cell already sees."""
    for index, output in enumerate(notebook.outputs(cell_id)):
        data = output.get("data")
        frame = data.get(FRAME_MIME) if isinstance(data, dict) else None
        if isinstance(frame, dict) and frame.get("ref") == ref:
            return index
    raise NotFound("no output of this cell shows that table (its cell was re-run or deleted)")


def check_view(body: dict[str, Any]) -> dict[str, Any]:
    """A grid's view as structured specs (never code): sort keys, filters, page."""
    sort, filters = body.get("sort", []), body.get("filter", [])
    if not isinstance(sort, list) or len(sort) > MAX_SORT_KEYS:
        raise BadRequest(f"'sort' must be a list of at most {MAX_SORT_KEYS} keys")
    for key in sort:
        if not (
            isinstance(key, dict)
            and set(key) <= {"column", "descending"}
            and isinstance(key.get("column"), str)
            and isinstance(key.get("descending", False), bool)
        ):
            raise BadRequest('a sort key is {"column": name, "descending": true|false}')
    if not isinstance(filters, list) or len(filters) > MAX_FILTERS:
        raise BadRequest(f"'filter' must be a list of at most {MAX_FILTERS} filters")
    for spec in filters:
        if not (
            isinstance(spec, dict)
            and set(spec) <= {"column", "op", "value"}
            and isinstance(spec.get("column"), str)
            and spec.get("op") in FILTER_OPS
        ):
            raise BadRequest(
                f'a filter is {{"column": name, "op": one of {", ".join(FILTER_OPS)}, '
                '"value": ...}'
            )
        value = spec.get("value")
        if not (value is None or isinstance(value, str | int | float | bool)) or (
            isinstance(value, str) and len(value) > MAX_FILTER_VALUE_CHARS
        ):
            raise BadRequest(
                f"a filter's value is a string (at most {MAX_FILTER_VALUE_CHARS} characters), "
                "a number, true, false or null"
            )
    page, size = body.get("page", 0), body.get("page_size", 50)
    for name, value, high in (("page", page, 10**9), ("page_size", size, MAX_PAGE_ROWS)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
            raise BadRequest(f"'{name}' must be a whole number from 0 to {high}")
    if size == 0:
        raise BadRequest("'page_size' must be at least 1")
    return {"sort": sort, "filter": filters, "page": page, "page_size": size}
