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

The check's work is bounded by the same limits, so it ends; but a stranger's update must
not hold the worker (and every other connection's large update waiting behind it) for as
long as a loaded machine lets it run. One check may take ``timeout`` seconds of the
worker's time (waiting for one's turn does not count): past that, the worker is killed
(its reply would otherwise be read as the next update's), that update is refused and its
connection closed, and the next large update starts a fresh worker.

    >>> async with CheckPool(timeout=settings.update_check_seconds) as checks:
    ...     facts = await checks.check(update, room.state())
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import sys
from types import TracebackType

import anyio

from collab.errors import Unavailable
from collab.sync.update_check import UpdateFacts, UpdateRefused, check_update

log = logging.getLogger(__name__)

# Larger updates are checked in the worker (~20-40 ms of check inline at worst; see
# docs/performance.md, "One large update").
INLINE_CHECK_BYTES = 32 * 1024
_HEADER = 8  # each message: its length (little-endian), then a pickle


def _check_in_worker(update: bytes, state: dict[int, int]) -> UpdateFacts | str:
    """The facts, or why the update is refused (as text: exceptions with their own
    constructor do not cross a process boundary reliably)."""
    try:
        return check_update(update, state)
    except UpdateRefused as exc:
        return exc.message


def _serve() -> None:
    """The worker: (update, state) in on stdin, the answer out on stdout, until EOF. Both
    ends are ours (the bytes it checks are inside a pickle we made), hence pickle."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while len(header := source.read(_HEADER)) == _HEADER:
        update, state = pickle.loads(source.read(int.from_bytes(header, "little")))
        answer = pickle.dumps(_check_in_worker(update, state))
        sink.write(len(answer).to_bytes(_HEADER, "little") + answer)
        sink.flush()


def _collab_root() -> str:
    """Where the worker imports collab from: where this server does (a source tree or the
    venv)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class CheckPool:
    """A worker process that checks large updates; started at the first one.

    Each connection awaits its own update's check before its next frame is handled, so the
    order of one connection's frames is kept; other connections go on meanwhile (their own
    large updates wait for the worker in turn).

    The worker is a plain ``python -m collab.sync.check_pool`` over pipes, not a
    ``multiprocessing`` pool: spawning one of those re-imports the server's main module
    (the whole app) in the worker, and forking would copy a process with threads.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._process: asyncio.subprocess.Process | None = None
        self._turn = anyio.Lock()

    async def __aenter__(self) -> CheckPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the worker (killed: a check under way is not worth waiting for), and wait
        for it, which closes its pipes."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            process.kill()
        if process.stdin is not None:
            process.stdin.close()
        with anyio.CancelScope(shield=True):
            await process.wait()

    def inline(self, update: bytes) -> bool:
        return len(update) <= INLINE_CHECK_BYTES

    async def check(self, update: bytes, state: dict[int, int]) -> UpdateFacts:
        """Check ``update`` against ``state`` (copied now: the room's copy moves on).
        Raises UpdateRefused, or Unavailable if the worker died."""
        if self.inline(update):
            return check_update(update, state)
        request = pickle.dumps((update, dict(state)), protocol=pickle.HIGHEST_PROTOCOL)
        async with self._turn:
            # Shielded: a reply left unread would be taken as the next update's. The
            # deadline inside the shield still applies, and kills the worker.
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(self.timeout) as deadline:
                    answer = await self._ask(request)
                if deadline.cancelled_caught:
                    log.warning(
                        "update check took too long: worker killed",
                        extra={"update_bytes": len(update), "timeout_seconds": self.timeout},
                    )
                    await self.aclose()
                    raise UpdateRefused(
                        f"checking this update took over {self.timeout:g} s: "
                        "send the change as several smaller updates"
                    )
        if isinstance(answer, str):
            raise UpdateRefused(answer)
        return answer

    async def _ask(self, request: bytes) -> UpdateFacts | str:
        process = self._process
        if process is None or process.returncode is not None:
            process = self._process = await self._start()
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            process.stdin.write(len(request).to_bytes(_HEADER, "little") + request)
            await process.stdin.drain()
            size = int.from_bytes(await process.stdout.readexactly(_HEADER), "little")
            answer: UpdateFacts | str = pickle.loads(await process.stdout.readexactly(size))
        except (OSError, asyncio.IncompleteReadError):
            # Killed from outside (the OOM killer): the next large update starts another.
            log.error("update check worker died: starting another")
            await self.aclose()
            raise Unavailable("the server could not check this update: try again") from None
        return answer

    async def _start(self) -> asyncio.subprocess.Process:
        path = os.pathsep.join(filter(None, [_collab_root(), os.environ.get("PYTHONPATH")]))
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "collab.sync.check_pool",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )


if __name__ == "__main__":
    _serve()
