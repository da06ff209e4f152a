"""The document worker (collab.sync.document_worker) checks large updates and folds logs:
one slow piece of work holds it for at most its timeout, is refused with a reason, and the
next piece of work is done by a fresh worker; a worker that dies costs that piece only."""

from __future__ import annotations

import signal
import uuid
from typing import Any

import anyio
import pytest
from pycrdt import Doc, Text

from collab.document.cell_text import stored_cells
from collab.document.notebook import seed_update
from collab.errors import Unavailable
from collab.storage.fold import fold
from collab.sync.document_worker import INLINE_CHECK_BYTES, DocumentWorker, StoredDocumentFailed
from collab.sync.update_check import MAX_UPDATE_CHANGES, UpdateRefused
from tests.collab.test_large_updates import built, map_entries

pytestmark = pytest.mark.anyio


async def test_a_check_past_its_time_is_refused_and_the_worker_replaced() -> None:
    update = built(map_entries(MAX_UPDATE_CHANGES - 10))
    assert len(update) > INLINE_CHECK_BYTES
    async with DocumentWorker(timeout=30) as checks:
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


def _typed(parts: list[str]) -> list[bytes]:
    doc: Doc[Any] = Doc(client_id=3)
    text = doc.get("t", type=Text)
    updates = []
    for part in parts:
        state = doc.get_state()
        text.insert(len(text), part)
        updates.append(doc.get_update(state))
    return updates


def _text(update: bytes) -> str:
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    return str(doc.get("t", type=Text))


async def test_a_fold_in_the_worker_is_the_fold_made_here() -> None:
    updates = _typed([f"{n};" for n in range(300)])
    async with DocumentWorker(timeout=30) as worker:
        folded = await worker.fold(updates)
    assert _text(folded) == _text(fold(updates)) == "".join(f"{n};" for n in range(300))


async def test_an_unreadable_log_fails_its_fold_and_the_worker_goes_on() -> None:
    good = _typed(["a", "b"])
    async with DocumentWorker(timeout=30) as worker:
        with pytest.raises(StoredDocumentFailed, match=r"ValueError|Panic"):
            await worker.fold([good[0], b"\x01\xff\xff\xff\xff\x0f"])
        first = worker._process
        assert _text(await worker.fold(good)) == "ab"
        assert worker._process is first  # the same worker: refusing cost it nothing


async def test_a_fold_past_its_time_fails_and_the_next_gets_a_fresh_worker() -> None:
    updates = _typed([f"{n};" for n in range(2000)])
    async with DocumentWorker(timeout=30) as worker:
        await worker.fold(updates[:1])
        first = worker._process
        assert first is not None
        worker.timeout = 0.0001
        with pytest.raises(StoredDocumentFailed, match=r"took over 0\.0001 s"):
            await worker.fold(updates)
        assert await first.wait() is not None
        worker.timeout = 30
        assert _text(await worker.fold(updates[:2])) == "0;1;"
        assert worker._process is not first


async def test_a_worker_that_dies_mid_fold_costs_that_fold_only() -> None:
    """A binding that crashes on a stored document (a segfault, an abort) kills the worker,
    not the server: that compaction fails, the next piece of work starts a new worker."""
    updates = _typed([f"{n};" for n in range(20_000)])
    async with DocumentWorker(timeout=30) as worker:
        await worker.fold(updates[:1])
        process = worker._process
        assert process is not None

        async def kill_soon() -> None:
            await anyio.sleep(0.05)
            process.send_signal(signal.SIGKILL)

        async with anyio.create_task_group() as tg:
            tg.start_soon(kill_soon)
            with pytest.raises(Unavailable, match="stopped while folding"):
                await worker.fold(updates * 3)
        assert _text(await worker.fold(updates[:3])) == "0;1;2;"
        assert worker._process is not process


async def test_a_stored_notebook_read_in_the_worker_is_the_read_made_here() -> None:
    notebook_id = uuid.uuid4()
    cells = [{"cell_type": "code", "source": f"a{n} = {n}"} for n in range(50)]
    seed = seed_update({"metadata": {}, "cells": cells}, notebook_id)
    async with DocumentWorker(timeout=30) as worker:
        read = await worker.read_cells([seed])
        assert read == stored_cells([seed])
        assert read[1][49] == "a49 = 49"
        with pytest.raises(StoredDocumentFailed, match=r"ValueError|Panic"):
            await worker.read_cells([seed, b"\x01\xff\xff\xff\xff\x0f"])
        first = worker._process
        assert await worker.read_cells([seed]) == read
        assert worker._process is first  # refusing cost the worker nothing
