"""Background services stop in order and outlive a failing task; room hooks outlive a
failing hook; an extension's routes answer 503 while its service is not running."""

from __future__ import annotations

import logging
import uuid

import anyio
import pytest
from anyio.abc import TaskStatus

from collab import background
from collab.background import BackgroundService
from collab.errors import Unavailable
from collab.services.extensions import Running
from collab.sync.hooks import RoomHookList, RoomHooks

pytestmark = pytest.mark.anyio


class Flaky(BackgroundService):
    name = "flaky"

    def __init__(self) -> None:
        self.events: list[str] = []
        self.runs = 0
        self.again = anyio.Event()

    async def start(self) -> None:
        self.loop(self._loop)

    async def _loop(self) -> None:
        self.runs += 1
        if self.runs == 1:
            raise RuntimeError("a bug in the loop")
        self.again.set()
        try:
            await anyio.sleep_forever()
        finally:
            self.events.append("loop cancelled")

    async def stopping(self) -> None:
        self.events.append("stopping")

    async def stopped(self) -> None:
        self.events.append("stopped")


async def test_a_failing_loop_is_logged_and_started_again_and_stopping_comes_before_cancel(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(background, "RESTART_SECONDS", 0.01)
    caplog.set_level(logging.ERROR, logger="collab.background")
    with anyio.fail_after(5):
        async with Flaky() as service:
            await service.again.wait()
            service.task(_fails)
            await anyio.sleep(0.05)
            assert service.started
    assert service.runs == 2
    assert service.events == ["stopping", "loop cancelled", "stopped"]
    failed = [r for r in caplog.records if r.getMessage() == "background task failed"]
    assert [getattr(r, "task") for r in failed] == ["flaky:_loop", "flaky:_fails"]  # noqa: B009
    assert not service.started


async def _fails() -> None:
    raise ValueError("a bug in a one-off task")


class Recorder(RoomHooks):
    def __init__(self, seen: list[str], fail: bool = False) -> None:
        self.seen, self.fail = seen, fail

    def room_unloaded(self, notebook_id: uuid.UUID) -> None:
        self.seen.append(str(notebook_id))
        if self.fail:
            raise RuntimeError("a bug in a hook")


def test_a_failing_room_hook_is_logged_and_the_next_one_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []
    hooks = RoomHookList()
    hooks.add(Recorder(seen, fail=True))
    hooks.add(Recorder(seen))
    notebook_id = uuid.uuid4()
    hooks.room_unloaded(notebook_id)
    assert seen == [str(notebook_id)] * 2
    assert [r.getMessage() for r in caplog.records] == ["room hook failed"]


def test_a_route_bound_to_a_service_that_is_not_running_is_unavailable() -> None:
    service = Running[str]("sweeper")
    with pytest.raises(Unavailable, match="sweeper is not running"):
        service.get()
    with service.serving("running"):
        assert service.get() == "running"
    with pytest.raises(Unavailable):
        service.get()


class Starter(BackgroundService):
    name = "starter"


async def _starts(outcome: str, after: anyio.Event, *, task_status: TaskStatus[None]) -> None:
    if outcome == "refused":
        raise ValueError("refused before it started")
    task_status.started()
    await after.wait()
    raise RuntimeError("a bug after it started")


async def test_a_task_started_raises_to_its_caller_until_it_has_started_then_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="collab.background")
    after = anyio.Event()
    with anyio.fail_after(5):
        async with Starter() as service:
            with pytest.raises(ValueError, match="refused before it started"):
                await service.task_started(_starts, "refused", after)
            await service.task_started(_starts, "fine", after)
            after.set()
            await anyio.sleep(0.05)
            assert service.started  # the failure after the start did not stop the service
    failed = [r for r in caplog.records if r.getMessage() == "background task failed"]
    assert [getattr(r, "task") for r in failed] == ["starter:_starts"]  # noqa: B009
