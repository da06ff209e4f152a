"""The base of every long-lived service that owns background tasks (the writer, replication,
the access watch, the room manager, the search indexer).

``async with service:`` starts its tasks and leaving stops them, always in the same order:
``start`` (start the loops), the body, ``stopping`` (finish work while the tasks still
run: the writer writes what is pending), the tasks cancelled and awaited, ``stopped``
(release what they used). A task that fails is logged with the service's and the task's
name; a loop (``loop``) is then started again after a pause, so one bug neither stops the
server nor, silently, the service. Cancellation and the CRDT binding's panics (not
``Exception``) are never caught here.

>>> class Sweeper(BackgroundService):
...     name = "sweeper"
...     async def start(self) -> None:
...         self.loop(self._sweep_forever)
>>> async with Sweeper() as sweeper:
...     sweeper.task(sweeper.sweep_now, notebook_id)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import ClassVar, Self, TypeVarTuple

import anyio
from anyio.abc import TaskGroup, TaskStatus

log = logging.getLogger(__name__)

Ts = TypeVarTuple("Ts")

# How long a loop that failed waits before it starts again (a failure that repeats at
# once would otherwise fill the log as fast as it can be written).
RESTART_SECONDS = 1.0


class BackgroundService:
    name: ClassVar[str] = "service"
    _tasks: TaskGroup | None = None

    async def start(self) -> None:
        """Start the service's tasks (``self.loop``, ``self.task``); called on entry."""

    async def stopping(self) -> None:
        """Finish work on the way out, while the tasks still run."""

    async def stopped(self) -> None:
        """Release what the tasks used, after every one of them has ended."""

    @property
    def started(self) -> bool:
        return self._tasks is not None

    async def __aenter__(self) -> Self:
        tasks = anyio.create_task_group()
        await tasks.__aenter__()
        self._tasks = tasks
        try:
            await self.start()
        except BaseException:
            await self._end_tasks()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.stopping()
        finally:
            await self._end_tasks()

    async def _end_tasks(self) -> None:
        tasks, self._tasks = self._tasks, None
        assert tasks is not None, f"{self.name} was not started"
        try:
            tasks.cancel_scope.cancel()
            await tasks.__aexit__(None, None, None)
        finally:
            await self.stopped()

    def loop(self, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run`` (a loop that never returns) for as long as the service runs."""
        self._group().start_soon(self._keep_running, run, name=self._task_name(run))

    def task(self, run: Callable[[*Ts], Awaitable[object]], *args: *Ts) -> None:
        """Run ``run(*args)`` once, in the background; a failure is logged. Once the
        service is stopping it is not started (``stopped`` does what must still be done)."""
        if self._tasks is None:
            log.info(
                "background task not started: the service is stopping",
                extra={"service": self.name, "task": self._task_name(run)},
            )
            return
        self._tasks.start_soon(self._logged, run, *args, name=self._task_name(run))

    async def task_started(self, run: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``run(*args, task_status=...)`` once, in the background, and return when it
        calls ``task_status.started()``: what it raises before then is raised here (for the
        caller to answer), what it raises after is logged, as for ``task``."""
        await self._group().start(self._logged_once_started, run, *args, name=self._task_name(run))

    def _group(self) -> TaskGroup:
        assert self._tasks is not None, f"{self.name} is not running"
        return self._tasks

    def _task_name(self, run: Callable[..., object]) -> str:
        return f"{self.name}:{getattr(run, '__name__', 'task')}"

    async def _keep_running(self, run: Callable[[], Awaitable[None]]) -> None:
        while True:
            await self._logged(run)
            await anyio.sleep(RESTART_SECONDS)

    async def _logged_once_started(
        self,
        run: Callable[..., Awaitable[object]],
        *args: object,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        status = _Started(task_status)
        try:
            await run(*args, task_status=status)
        except Exception:
            if not status.done:
                raise
            log.exception(
                "background task failed",
                extra={"service": self.name, "task": self._task_name(run)},
            )

    async def _logged(self, run: Callable[[*Ts], Awaitable[object]], *args: *Ts) -> None:
        try:
            await run(*args)
        except Exception:
            log.exception(
                "background task failed",
                extra={"service": self.name, "task": self._task_name(run)},
            )


class _Started:
    """A task's ``task_status`` that remembers whether the task said it started."""

    def __init__(self, status: TaskStatus[None]) -> None:
        self._status = status
        self.done = False

    def started(self, value: None = None) -> None:
        self.done = True
        self._status.started(value)
