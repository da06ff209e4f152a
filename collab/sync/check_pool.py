"""Large client updates are checked in a worker process, so no frame holds the event loop.

The check (collab.sync.update_check) is pure Python: ~1 µs per change, and an update may hold up
to ``MAX_UPDATE_CHANGES`` of them, so a large valid update would keep the one event loop
that serves every notebook busy for ~100 ms on this project's 2-core machine (more when it
is loaded). Updates above ``INLINE_CHECK_BYTES`` are therefore checked in a worker process
while the loop goes on serving everyone else; what is left on the loop for them is the
binding's apply (bounded by the same limits) and a copy of the bytes. Keystrokes (tens of
bytes) and pastes of a few cells stay inline, where a round trip to a process would cost
more than the check.

A thread would not do: the check holds the GIL, and the event loop would wait for it at
every system call. The worker imports only the check (and the error tree it raises).

>>> async with CheckPool() as checks:
...     facts = await checks.check(update, room.state())
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType

from collab.errors import Unavailable
from collab.sync.update_check import UpdateFacts, UpdateRefused, check_update

log = logging.getLogger(__name__)

# Larger updates are checked in the worker (~20-40 ms of check inline at worst; see
# docs/performance.md, "One large update").
INLINE_CHECK_BYTES = 32 * 1024


def _check_in_worker(update: bytes, state: dict[int, int]) -> UpdateFacts | str:
    """Runs in the worker: the facts, or why the update is refused (as text: exceptions
    with their own constructor do not cross a process boundary reliably)."""
    try:
        return check_update(update, state)
    except UpdateRefused as exc:
        return exc.message


class CheckPool:
    """Worker processes that check large updates; started at the first one.

    Each connection awaits its own update's check before its next frame is handled, so the
    order of one connection's frames is kept; other connections go on meanwhile.
    """

    def __init__(self, workers: int = 1) -> None:
        self._workers = workers
        self._executor: ProcessPoolExecutor | None = None

    async def __aenter__(self) -> CheckPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def inline(self, update: bytes) -> bool:
        return len(update) <= INLINE_CHECK_BYTES

    async def check(self, update: bytes, state: dict[int, int]) -> UpdateFacts:
        """Check ``update`` against ``state`` (copied now: the room's copy moves on).
        Raises UpdateRefused, or Unavailable if the worker died."""
        if self.inline(update):
            return check_update(update, state)
        if self._executor is None:
            # spawn: the server's threads (asyncpg, docker) must not be forked mid-lock.
            self._executor = ProcessPoolExecutor(
                self._workers, mp_context=multiprocessing.get_context("spawn")
            )
        executor = self._executor
        try:
            result = await asyncio.wrap_future(
                executor.submit(_check_in_worker, update, dict(state))
            )
        except BrokenProcessPool:
            # Killed from outside (the OOM killer): the next large update starts a new one.
            log.error("update check worker died: starting another")
            if self._executor is executor:
                self._executor = None
            executor.shutdown(wait=False, cancel_futures=True)
            raise Unavailable("the server could not check this update: try again") from None
        if isinstance(result, str):
            raise UpdateRefused(result)
        return result
