"""Document work that would hold the event loop runs in a worker process: checking large
client updates, folding a notebook's log into its snapshot (compaction), and reading a
stored notebook's cells for the search index.

One event loop serves every notebook, so work on one document must not hold it:

- The check (collab.sync.update_check) is pure Python: ~1 µs per change, and an update may
  hold up to ``MAX_UPDATE_CHANGES`` of them, so a large valid update would keep the loop
  busy for ~100 ms on this project's 2-core machine (more when it is loaded). Updates above
  ``INLINE_CHECK_BYTES`` are therefore checked here while the loop goes on serving everyone
  else; what is left on the loop for them is the binding's apply (bounded by the same
  limits) and a copy of the bytes. Keystrokes (tens of bytes) and pastes of a few cells
  stay inline, where a round trip to a process would cost more than the check.
- Compaction (collab.sync.room_manager) folds the stored snapshot and the updates logged
  after it: the binding applies the whole document and encodes it again, every
  ``WEFT_COMPACT_AFTER_UPDATES`` updates. That is 10-20 ms for a notebook of one cell and
  a few thousand keystrokes, and ~0.25 s for one of 10,000 cells; on the loop it stalled
  every notebook the server holds, and a binding that crashed on a stored document would
  have taken the server with it. Here a crash costs the worker (started again for the next
  piece of work) and that compaction (the log stays as it is). Every fold runs here.
- The search index (collab.search.indexer) reads the text of notebooks that are not loaded
  (new, imported, or changed by a server that died) from the store: the same apply of the
  whole document, and its memory, which the server process would keep. Every such read
  runs here; a loaded room's document is read where it lives.

A thread would not do: the check holds the GIL, and so does the binding, and the event loop
would wait for it at every system call.

The work is bounded (the check by the update limits, the fold by the notebook's size); but
a stranger's update must not hold the worker (and every other piece of work waiting behind
it) for as long as a loaded machine lets it run. One piece of work may take ``timeout``
seconds of the worker's time (waiting for one's turn does not count): past that, the worker
is killed (its reply would otherwise be read as the next one's), that update is refused and
its connection closed (or that compaction fails), and the next piece of work starts a fresh
worker.

    >>> async with DocumentWorker(timeout=settings.update_check_seconds) as worker:
    ...     facts = await worker.check(update, room.state())
    ...     snapshot = await worker.fold([snapshot, *logged])
    ...     cell_ids, sources = await worker.read_cells([snapshot, *logged])
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import anyio

from collab.document.cell_text import stored_cells
from collab.errors import Unavailable, is_failure
from collab.storage.fold import fold
from collab.sync.update_check import UpdateFacts, UpdateRefused, check_update

log = logging.getLogger(__name__)

# Larger updates are checked in the worker (~20-40 ms of check inline at worst; see
# docs/performance.md, "One large update").
INLINE_CHECK_BYTES = 32 * 1024
_HEADER = 8  # each message: its length (little-endian), then a pickle


class StoredDocumentFailed(Exception):
    """The stored document could not be folded or read (unreadable, or it took too long)."""


def _check_in_worker(update: bytes, state: dict[int, int]) -> UpdateFacts | str:
    """The facts, or why the update is refused (as text: exceptions with their own
    constructor do not cross a process boundary reliably)."""
    try:
        return check_update(update, state)
    except UpdateRefused as exc:
        return exc.message


# The work on a stored document the worker does, by request kind.
_STORED_WORK: dict[str, Callable[[list[bytes]], object]] = {"fold": fold, "cells": stored_cells}


def _stored_in_worker(kind: str, updates: list[bytes]) -> object:
    """What the work ``kind`` makes of the stored document, or why the binding could not
    read it (as text)."""
    try:
        return _STORED_WORK[kind](updates)
    except BaseException as exc:  # the binding's panic is a BaseException
        if not is_failure(exc):
            raise
        return repr(exc)


def _answer(request: tuple[Any, ...]) -> object:
    if request[0] in _STORED_WORK:
        return _stored_in_worker(request[0], request[1])
    return _check_in_worker(request[1], request[2])


# After work on at least this many bytes, the worker gives the memory it freed back.
_TRIM_AFTER_BYTES = 1 << 20


def _memory_trimmer() -> Any:
    """glibc's ``malloc_trim``, or None where there is none. A whole document applied and
    dropped leaves its memory in the allocator's free lists, not given back (~90 MB for
    10,000 cells), and the worker would keep its largest document's worth for good."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def _serve() -> None:
    """The worker: a request in on stdin, the answer out on stdout, until EOF. Both ends
    are ours (the bytes it works on are inside a pickle we made), hence pickle."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    trim = _memory_trimmer()
    while len(header := source.read(_HEADER)) == _HEADER:
        size = int.from_bytes(header, "little")
        request = pickle.loads(source.read(size))
        answer = pickle.dumps(_answer(request), protocol=pickle.HIGHEST_PROTOCOL)
        sink.write(len(answer).to_bytes(_HEADER, "little") + answer)
        sink.flush()
        del request, answer
        if trim is not None and size >= _TRIM_AFTER_BYTES:
            trim(0)  # after the answer is out: nobody waits for it


def _collab_root() -> str:
    """Where the worker imports collab from: where this server does (a source tree or the
    venv)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class DocumentWorker:
    """A worker process for large updates' checks, compaction's folds and reads of stored
    notebooks; started with the room manager, and again after it died.

    Each connection awaits its own update's check before its next frame is handled, so the
    order of one connection's frames is kept; other connections go on meanwhile (their own
    large updates, and compactions, wait for the worker in turn).

    The worker is a plain ``python -m collab.sync.document_worker`` over pipes, not a
    ``multiprocessing`` pool: spawning one of those re-imports the server's main module
    (the whole app) in the worker, and forking would copy a process with threads.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._process: asyncio.subprocess.Process | None = None
        self._turn = anyio.Lock()

    async def __aenter__(self) -> DocumentWorker:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the worker (killed: work under way is not worth waiting for), and wait for
        it, which closes its pipes."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            process.kill()
        if process.stdin is not None:
            process.stdin.close()
        with anyio.CancelScope(shield=True):
            await process.wait()

    async def start(self) -> None:
        """Start the worker now rather than at the first piece of work: it imports the
        binding (~0.5 s of CPU), and the first compaction comes a few seconds into the
        first edits."""
        async with self._turn:
            if self._process is None or self._process.returncode is not None:
                with anyio.CancelScope(shield=True):  # never a process left half-started
                    self._process = await self._start()

    def inline(self, update: bytes) -> bool:
        return len(update) <= INLINE_CHECK_BYTES

    async def check(self, update: bytes, state: dict[int, int]) -> UpdateFacts:
        """Check ``update`` against ``state`` (copied now: the room's copy moves on).
        Raises UpdateRefused, or Unavailable if the worker died."""
        if self.inline(update):
            return check_update(update, state)
        answer = await self._run(
            ("check", update, dict(state)),
            "update check",
            len(update),
            died="the server could not check this update: try again",
        )
        if answer is None:
            raise UpdateRefused(
                f"checking this update took over {self.timeout:g} s: "
                "send the change as several smaller updates"
            )
        if isinstance(answer, str):
            raise UpdateRefused(answer)
        assert isinstance(answer, UpdateFacts)
        return answer

    async def fold(self, updates: Sequence[bytes]) -> bytes:
        """A snapshot and the updates after it as one update (collab.storage.fold), made in
        the worker. Raises StoredDocumentFailed if the binding could not fold them or it
        took too long, Unavailable if the worker died."""
        answer = await self._stored("fold", updates, "folding")
        assert isinstance(answer, bytes)
        return answer

    async def read_cells(self, updates: Sequence[bytes]) -> tuple[list[str], list[str]]:
        """(cell ids, cell sources) of the document the stored updates make
        (collab.document.cell_text), read in the worker. Raises StoredDocumentFailed if the
        binding could not read them or it took too long, Unavailable if the worker died."""
        answer = await self._stored("cells", updates, "reading")
        assert isinstance(answer, tuple)
        cell_ids, sources = answer
        return cell_ids, sources

    async def _stored(self, kind: str, updates: Sequence[bytes], doing: str) -> object:
        """The worker's answer to work ``kind`` on a stored document."""
        answer = await self._run(
            (kind, list(updates)),
            kind,
            sum(len(u) for u in updates),
            died=f"the document worker stopped while {doing} this notebook",
        )
        if answer is None:
            raise StoredDocumentFailed(f"{doing} the document took over {self.timeout:g} s")
        if isinstance(answer, str):
            raise StoredDocumentFailed(answer)
        return answer

    async def _run(
        self, request: tuple[Any, ...], what: str, size: int, *, died: str
    ) -> object | None:
        """The worker's answer to ``request``, or None if it took longer than ``timeout``
        (the worker is killed then). Raises Unavailable(``died``) if the worker died."""
        data = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        async with self._turn:
            # Shielded: a reply left unread would be taken as the next request's. The
            # deadline inside the shield still applies, and kills the worker.
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(self.timeout) as deadline:
                    answer = await self._ask(data, died)
                if deadline.cancelled_caught:
                    log.warning(
                        "document work took too long: worker killed",
                        extra={"work": what, "bytes": size, "timeout_seconds": self.timeout},
                    )
                    await self.aclose()
                    return None
        return answer

    async def _ask(self, request: bytes, died: str) -> object:
        process = self._process
        if process is None or process.returncode is not None:
            process = self._process = await self._start()
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            process.stdin.write(len(request).to_bytes(_HEADER, "little") + request)
            await process.stdin.drain()
            size = int.from_bytes(await process.stdout.readexactly(_HEADER), "little")
            answer: object = pickle.loads(await process.stdout.readexactly(size))
        except (OSError, asyncio.IncompleteReadError):
            # Killed from outside (the OOM killer), or crashed in the binding: the next
            # piece of work starts another.
            log.error("document worker died: starting another")
            await self.aclose()
            raise Unavailable(died) from None
        return answer

    async def _start(self) -> asyncio.subprocess.Process:
        path = os.pathsep.join(filter(None, [_collab_root(), os.environ.get("PYTHONPATH")]))
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "collab.sync.document_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )


if __name__ == "__main__":
    _serve()
