"""``/healthz`` timed from a process of its own, while a block of a test runs.

A test's own clients decode what the server sends them on the test's event loop (a
600 KB update takes pycrdt ~100 ms): timing health on that loop counts their work as the
server's stall. The poller runs in a subprocess, answers "ready" once it has had its first
answer, and prints the slowest answer when its stdin closes.

Run as ``python -m tests.support.health URL``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import httpx

from tests.support.server import ROOT

PAUSE_S = 0.01


@dataclass
class HealthTimes:
    """What the poller saw: filled in when the block ends."""

    slowest_s: float = 0.0
    answers: int = 0


@contextlib.asynccontextmanager
async def health_timed(url: str) -> AsyncIterator[HealthTimes]:
    """Poll ``url``/healthz every 10 ms from another process while the block runs."""
    times = HealthTimes()
    proc = await anyio.open_process(
        [sys.executable, "-m", "tests.support.health", url],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        with anyio.fail_after(30):
            ready = await proc.stdout.receive()
        assert ready.startswith(b"ready"), ready
        yield times
        await proc.stdin.aclose()
        output = b""
        with anyio.fail_after(30):
            async for chunk in proc.stdout:
                output += chunk
        result = json.loads(output)
        times.slowest_s, times.answers = result["slowest_s"], result["answers"]
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.aclose()


def poll(url: str) -> None:
    stopped = threading.Event()

    def wait_for_stdin_to_close() -> None:
        sys.stdin.buffer.read()
        stopped.set()

    threading.Thread(target=wait_for_stdin_to_close, daemon=True).start()
    slowest, answers = 0.0, 0
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stopped.is_set():
            started = time.perf_counter()
            response = client.get("/healthz")
            if response.status_code != 200:
                raise SystemExit(f"/healthz answered {response.status_code}: {response.text}")
            slowest = max(slowest, time.perf_counter() - started)
            answers += 1
            if answers == 1:
                slowest = 0.0  # the first answer also opened the connection
                sys.stdout.write("ready\n")
                sys.stdout.flush()
            time.sleep(PAUSE_S)
    sys.stdout.write(json.dumps({"slowest_s": slowest, "answers": answers}) + "\n")


if __name__ == "__main__":
    poll(sys.argv[1])
