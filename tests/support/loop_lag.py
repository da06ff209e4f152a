"""How long the event loop was held while a block ran: a task that sleeps 2 ms at a time
records by how much each sleep overran."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import anyio

_TICK = 0.002


class LoopLag:
    max_seconds: float = 0.0


@contextlib.asynccontextmanager
async def loop_lag() -> AsyncIterator[LoopLag]:
    """``async with loop_lag() as lag: ...``, then ``lag.max_seconds``."""
    lag = LoopLag()
    done = anyio.Event()

    async def tick() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await anyio.sleep(_TICK)
            lag.max_seconds = max(lag.max_seconds, time.perf_counter() - before - _TICK)

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        await anyio.sleep(0.05)  # the tick is running before the block starts
        try:
            yield lag
        finally:
            done.set()
