"""The worker that checks large updates (collab.sync.check_pool): one slow check holds it
for at most its timeout, is refused with a reason, and the next large update is checked
by a fresh worker."""

from __future__ import annotations

import pytest

from collab.sync.check_pool import INLINE_CHECK_BYTES, CheckPool
from collab.sync.update_check import MAX_UPDATE_CHANGES, UpdateRefused
from tests.collab.test_large_updates import built, map_entries

pytestmark = pytest.mark.anyio


async def test_a_check_past_its_time_is_refused_and_the_worker_replaced() -> None:
    update = built(map_entries(MAX_UPDATE_CHANGES - 10))
    assert len(update) > INLINE_CHECK_BYTES
    async with CheckPool(timeout=30) as checks:
        facts = await checks.check(update, {})  # the worker starts, and this passes
        first = checks._process
        assert first is not None
        assert first.returncode is None

        checks.timeout = 0.001  # far below what this check takes
        with pytest.raises(UpdateRefused, match=r"took over 0\.001 s: send the change as"):
            await checks.check(update, {})
        assert await first.wait() is not None  # killed: its late reply is never read

        checks.timeout = 30
        assert await checks.check(update, {}) == facts  # a fresh worker, the same answer
        assert checks._process is not None
        assert checks._process is not first
