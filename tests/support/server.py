"""A real Weft server in a subprocess on a free port, as a user would start it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class _Process:
    """A Weft process with its own state directory and log file."""

    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_name = "process.log"

    @property
    def log_path(self) -> Path:
        return self.state_dir / self.log_name

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # Test servers start a kernel only for a commit, unless a test asks for the product's
        # default (tests/executor/test_prestart.py): opening a notebook starts none.
        env = {
            **os.environ,
            "WEFT_KERNEL_PRESTART": "off",
            "WEFT_STATE_DIR": str(self.state_dir),
            **self.env,
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "collab.server.cli", *args],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
            )
        return self.proc

    def _check_alive(self, deadline: float, what: str) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {self.proc.returncode}:\n{self.log_text()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not become ready:\n{self.log_text()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flushing, as a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class ServerProcess(_Process):
    """``weft serve`` on a free port; start, kill and start again on that port."""

    port: int = field(default_factory=free_port)
    starts: int = 0
    # The bearer token of the test's signed-up owner (set by the start_server fixture).
    token: str | None = None
    log_name = "server.log"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self, timeout: float = 60) -> None:
        self._spawn("serve", "--port", str(self.port))
        self.starts += 1
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while True:
                self._check_alive(deadline, "server")
                try:
                    if (await client.get(f"{self.url}/healthz", timeout=2)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await anyio.sleep(0.05)


@dataclass
class WorkerProcess(_Process):
    """``weft executor``: a worker with no HTTP server, ready once it logs so."""

    log_name = "worker.log"

    async def start(self, timeout: float = 60) -> None:
        self._spawn("executor")
        deadline = time.monotonic() + timeout
        while "worker ready" not in self.log_text():
            self._check_alive(deadline, "worker")
            await anyio.sleep(0.05)
