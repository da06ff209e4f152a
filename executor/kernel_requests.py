"""Requests to a kernel and their answers: the channel beside runs.

A request (`{"type": "request", "request_id", "kind", ...}`) is a line on the runner's stdin
like a run, so the runner answers it when the cell in progress (if any) has finished, as
Jupyter's shell channel queues requests behind execution. Only one request at a time is in
the runner's input (the others wait here), so a run is never queued behind more than one;
each kernel has a few requests waiting at most, each waits a bounded time, and all of them
fail at once, with the reason, when the kernel stops. A `response` is hostile input like
everything a kernel sends: its shape is checked by executor.protocol, and one for a request
nobody waits for (it timed out, or cell code wrote it) is dropped.

>>> answer = await kernel.requests.ask(kernel.send, "complete", {"code": "df.", ...}, 5.0)
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from executor.outputs import size_of

# Requests one kernel may have waiting (each user is held to fewer by the rate limits).
MAX_WAITING = 4
# What one answer may carry to a browser (cell code can write the runner's channel).
MAX_ANSWER_BYTES = 4_000_000


class KernelRequestError(Exception):
    """A request was not answered; ``message`` is for the person who asked."""

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry  # asking again later may work (busy, timed out)


class KernelRefused(KernelRequestError):
    """The runner answered with an error (a missing column, a frame it no longer holds)."""


class PendingRequests:
    """One kernel's requests in flight, by id."""

    def __init__(self, max_waiting: int = MAX_WAITING) -> None:
        self.max_waiting = max_waiting
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._closed: str | None = None
        self._turn = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._waiting)

    async def ask(
        self,
        send: Callable[[dict[str, Any]], Awaitable[None]],
        kind: str,
        payload: dict[str, Any],
        wait_s: float,
    ) -> dict[str, Any]:
        """The runner's result for one request. Raises KernelRequestError."""
        if self._closed is not None:
            raise KernelRequestError(self._closed)
        if len(self._waiting) >= self.max_waiting:
            raise KernelRequestError(
                f"the kernel already has {len(self._waiting)} requests waiting; try again in "
                "a moment",
                retry=True,
            )
        request_id = f"q{next(self._ids)}"
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = answer
        try:
            async with asyncio.timeout(wait_s):
                # One request at a time in the runner's input: a run sent meanwhile waits for
                # that one at most, never for everything people have asked.
                async with self._turn:
                    if not answer.done():  # not failed by close() while it waited
                        await send(
                            {**payload, "type": "request", "request_id": request_id, "kind": kind}
                        )
                    message = await answer
        except TimeoutError:
            raise KernelRequestError(
                f"the kernel did not answer within {wait_s:g} s (requests wait for a running "
                "cell to finish); try again when it is idle",
                retry=True,
            ) from None
        except Exception as exc:  # the kernel stopped accepting input (KernelError)
            if isinstance(exc, KernelRequestError):
                raise
            raise KernelRequestError(f"the kernel stopped before it answered: {exc}") from None
        finally:
            self._waiting.pop(request_id, None)
        if not message["ok"]:
            raise KernelRefused(message["error"][:1000])
        result: dict[str, Any] = message["result"]
        if size_of(result) > MAX_ANSWER_BYTES:  # the runner's own stay far below (a page: ~1 MB)
            raise KernelRefused(f"the kernel's answer was larger than {MAX_ANSWER_BYTES:,} bytes")
        return result

    def deliver(self, message: dict[str, Any]) -> None:
        """A checked `response` from the runner; dropped unless someone waits for it."""
        answer = self._waiting.get(message["request_id"])
        if answer is not None and not answer.done():
            answer.set_result(message)

    def close(self, reason: str) -> None:
        """The kernel stopped: every request waiting fails with ``reason``."""
        self._closed = reason
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(KernelRequestError(reason))
