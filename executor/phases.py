"""Where a run's or a kernel start's time goes: named phases, logged with its end.

A run's phases (prepare, catch_up, environment, kernel, drive, finish) are in the "run
finished" log line, a kernel start's (create, attach, start, ready) in "kernel started";
docs/performance.md ("Run overhead") reads them."""

from __future__ import annotations

import time


class Phases:
    """Milliseconds per phase, each from the end of the previous one.

    >>> phases = Phases()
    >>> ...; phases.mark("prepare")
    >>> log.info("run finished", extra={"phases_ms": phases.ms})
    """

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.ms: dict[str, float] = {}

    def mark(self, name: str) -> None:
        """The phase ``name`` ended now (a phase marked twice adds up)."""
        now = time.perf_counter()
        self.ms[name] = round(self.ms.get(name, 0.0) + (now - self._last) * 1000, 2)
        self._last = now
