"""What this process is running now, and what was asked of those runs meanwhile: shared by
the worker loops (which claim runs and take interrupts and restarts), one run's life (which
reads the flags) and the stale marks (which wait while a notebook runs)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from executor.queue import Run


@dataclass
class InProgress:
    runs: dict[uuid.UUID, Run] = field(default_factory=dict)  # notebook id -> its run
    # Notebooks whose run in progress was interrupted (the run stops as soon as it can).
    interrupted: set[uuid.UUID] = field(default_factory=set)
    # Notebooks whose kernel was restarted while a run was in progress, and why.
    restarted: dict[uuid.UUID, str] = field(default_factory=dict)

    def running(self, notebook_id: uuid.UUID) -> bool:
        return notebook_id in self.runs

    def ended(self, notebook_id: uuid.UUID) -> None:
        self.runs.pop(notebook_id, None)
        self.interrupted.discard(notebook_id)
        self.restarted.pop(notebook_id, None)
