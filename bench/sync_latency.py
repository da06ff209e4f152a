"""Sync latency: C official Yjs clients type into one notebook; how soon do the others see it?

C clients (yjs + y-websocket's WebsocketProvider under Node, `bench/js/clients.mjs`) join
one notebook, wait for sync, and each types R stamps per second for D seconds into the first
cell's source (a Y.Text), each on its own timer with a random phase. Every client records
when it sees each remote stamp appear; the delay from an edit to each OTHER client seeing it
gives p50 / p99 / max over all (edit, observer) pairs. After typing, the clients wait for
quiet (bounded) and compare a hash of the final text (`converged`). The server's CPU seconds
(utime + stime, from /proc, its PostgreSQL separately) and peak RSS (VmHWM) are read for the
measured phase, and so is the load generator's own CPU.

The same harness runs against the Weft server (`weft serve`, fresh state directory), the
reference Node server (`@y/websocket-server`, in memory) and the persisting peers of
bench/peers.py (Jupyter's stack: pycrdt-websocket + SQLiteYStore on uvicorn; Hocuspocus 4 +
SQLite, with its own provider as the client) in one invocation; one JSON line:

    .venv/bin/python bench/sync_latency.py --clients 20 --rate 10 --duration 10
    .venv/bin/python bench/sync_latency.py --only reference
    .venv/bin/python bench/sync_latency.py --servers weft,jupyter,hocuspocus
    .venv/bin/python bench/sync_latency.py --only weft --server-url http://127.0.0.1:8000

Progress goes to stderr; see bench/README.md and docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers

ROOT = Path(__file__).resolve().parents[1]
JS_DIR = ROOT / "bench" / "js"
REFERENCE_SERVER = JS_DIR / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Clients per load-generator process when --procs is not given (see docs/performance.md:
# one Node process keeps up with this many at R=10 on the 2-core machine).
CLIENTS_PER_PROC = 25


class BenchError(RuntimeError):
    """A run could not be completed; the message says what went wrong."""


def log(message: str) -> None:
    print(f"[sync_latency] {message}", file=sys.stderr, flush=True)


# --- /proc ------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from field 3 (state) on; None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of the processes and of their children already reaped (cutime, cstime)."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            total += sum(int(v) for v in fields[11:15])
    return total / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, all processes), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def descendants(root: int) -> list[int]:
    """root and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def listening_pid(port: int) -> int | None:
    """The process that listens on 127.0.0.1:port (a server we did not start), if visible."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(parts[9])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(entry.name)
    return None


# --- servers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_json(
    method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


async def wait_http_ok(url: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"server exited with {proc.returncode} before answering {url}")
        with contextlib.suppress(OSError):
            status, _ = await asyncio.to_thread(http_json, "GET", url)
            if status == 200:
                return
        if time.monotonic() > deadline:
            raise BenchError(f"{url} did not answer 200 within {timeout:.0f} s")
        await asyncio.sleep(0.1)


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        log(f"pid {proc.pid} ignored SIGTERM for {grace:.0f} s: SIGKILL")
        proc.kill()
        proc.wait(5)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@dataclass
class Server:
    """A server under test: where clients connect, which processes to account for."""

    name: str
    init_cell: bool  # the harness creates the notebook's cell (the reference has no notebooks)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    keep_log: bool = False
    # Further WebSocket bases serving the same notebooks (other nodes); load-generator
    # processes are spread over [first, *others] round robin.
    other_ws_bases: list[str] = field(default_factory=list)
    # The clients' provider: y-websocket's WebsocketProvider, or Hocuspocus's own.
    provider: str = "y-websocket"

    async def start(self) -> None:
        raise NotImplementedError

    async def room(self) -> tuple[str, str]:
        """(WebSocket base URL, room name) for one fresh notebook."""
        raise NotImplementedError

    def server_pids(self) -> list[int]:
        return descendants(self.proc.pid) if self.proc and self.proc.poll() is None else []

    def postgres_pids(self) -> list[int] | None:
        return None

    def stop(self) -> None:
        stop_process(self.proc, 15)

    def log_offset(self) -> int:
        """Where the server's log ends now: what it writes later is the run's."""
        return 0

    def log_problems(self, offset: int) -> list[dict[str, Any]]:
        return []

    async def metrics(self) -> dict[str, float] | None:
        """Counters of the server's Prometheus endpoint, if it has one."""
        return None


def _open_log(prefix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".log")
    os.close(fd)
    return Path(name)


@dataclass
class WeftServer(Server):
    state_dir: Path | None = None
    # nodes=2: a second `weft serve` on the first one's embedded PostgreSQL, the clients
    # split over both (documents cross nodes through the log and LISTEN/NOTIFY).
    nodes: int = 1
    second: subprocess.Popen[bytes] | None = None
    second_state: Path | None = None
    # Another source tree of Weft to run (--weft-src: e.g. an earlier commit's collab/ and
    # executor/, unpacked with `git archive`), with this venv's packages.
    src: Path | None = None

    def _command(self, port: int) -> tuple[list[str], Path, dict[str, str]]:
        serve = ["serve", "--host", "127.0.0.1", "--port", str(port)]
        if self.src is not None:
            # Before the move into subpackages the command was collab.cli.
            module = (
                "collab.server.cli"
                if (self.src / "collab/server/cli.py").exists()
                else "collab.cli"
            )
            code = f"import sys; from {module} import main; sys.exit(main())"
            path = os.pathsep.join(filter(None, [str(self.src), os.environ.get("PYTHONPATH")]))
            return [sys.executable, "-c", code, *serve], self.src, {"PYTHONPATH": path}
        return [str(self._weft()), *serve], ROOT, {}

    def _weft(self) -> Path:
        weft = Path(sys.executable).parent / "weft"
        if weft.exists():
            return weft
        found = shutil.which("weft")
        if found is None:
            raise BenchError("no `weft` command: run `pip install -e .` in the venv first")
        return Path(found)

    async def start(self) -> None:
        if self.src is None:
            self._weft()
        if self.state_dir is None:  # set: a restart on the same state (bench/large_docs.py)
            self.state_dir = Path(tempfile.mkdtemp(prefix="weft-bench-state-"))
        self.log_path = self.log_path or _open_log("weft-bench-server-")
        command, cwd, extra = self._command(self.port)
        env = {**os.environ, **extra, "WEFT_STATE_DIR": str(self.state_dir)}
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,  # Ctrl-C reaches us; we stop it in order
            )
        log(f"weft serve on port {self.port} (pid {self.proc.pid}, log {self.log_path})")
        await wait_http_ok(f"http://127.0.0.1:{self.port}/healthz", self.proc, 60)
        if self.nodes > 1:
            port = free_port()
            self.second_state = Path(tempfile.mkdtemp(prefix="weft-bench-state-"))
            database = f"postgresql://postgres@/postgres?host={self.state_dir}/postgres"
            command2, cwd2, extra2 = self._command(port)
            env2 = {
                **os.environ,
                **extra2,
                "WEFT_STATE_DIR": str(self.second_state),
                "DATABASE_URL": database,
            }
            with self.log_path.open("ab") as out:
                self.second = subprocess.Popen(
                    command2,
                    cwd=cwd2,
                    env=env2,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                )
            log(f"second weft node on port {port} (pid {self.second.pid})")
            await wait_http_ok(f"http://127.0.0.1:{port}/healthz", self.second, 60)
            self.other_ws_bases = [f"ws://127.0.0.1:{port}/ws"]

    async def room(self) -> tuple[str, str]:
        return await create_notebook(f"http://127.0.0.1:{self.port}")

    def _postmaster(self) -> int | None:
        if self.state_dir is None:
            return None
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid_file = self.state_dir / "postgres" / "postmaster.pid"
            pid = int(pid_file.read_text().splitlines()[0])
            if alive(pid):
                return pid
        return None

    def postgres_pids(self) -> list[int] | None:
        postmaster = self._postmaster()
        return descendants(postmaster) if postmaster else []

    def server_pids(self) -> list[int]:
        pids = super().server_pids()
        if self.second is not None and self.second.poll() is None:
            pids += descendants(self.second.pid)
        return pids

    def restart_keep_state(self) -> None:
        """Stop the server and its PostgreSQL, keeping the state: start() again loads it."""
        postmaster = self._postmaster()
        stop_process(self.proc, 15)
        self.proc = None
        if postmaster is not None and not wait_gone(postmaster, 20):
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGINT)
            wait_gone(postmaster, 10)

    def stop(self) -> None:
        stop_process(self.second, 15)
        if self.second_state is not None:
            shutil.rmtree(self.second_state, ignore_errors=True)
        postmaster = self._postmaster()
        stop_process(self.proc, 15)
        # The embedded PostgreSQL is a daemon of its own; weft stops it at exit, but make
        # sure: it is ours, found by the state directory we made.
        if postmaster is not None and not wait_gone(postmaster, 10):
            log(f"embedded PostgreSQL (pid {postmaster}) still running: stopping it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGINT)  # fast shutdown
            if not wait_gone(postmaster, 10):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(postmaster, signal.SIGKILL)
                wait_gone(postmaster, 5)
        if self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        if self.log_path is not None and not self.keep_log:
            # Kept only when a run failed or the server warned (run_one), or with
            # --keep-logs: a bench session of many runs left hundreds behind.
            self.log_path.unlink(missing_ok=True)

    def log_offset(self) -> int:
        try:
            return self.log_path.stat().st_size if self.log_path is not None else 0
        except FileNotFoundError:
            return 0

    def log_problems(self, offset: int) -> list[dict[str, Any]]:
        return read_log_problems(self.log_path, offset)

    async def commit_round_trip(self, count: int = 300) -> dict[str, Any] | None:
        """The embedded PostgreSQL's commit round trip, measured from this process once the
        run is over: `count` single-row INSERTs (a 40-byte bytea, like a keystroke's
        update), each its own transaction (so each waits for its WAL flush), one at a time
        on one connection; and `SELECT 1` (a round trip without a commit). Its own table,
        dropped afterwards."""
        if self.state_dir is None or not (self.state_dir / "postgres").exists():
            return None
        try:
            import asyncpg  # Weft's own dependency: in the project's venv
        except ImportError:
            return None
        dsn = f"postgresql://postgres@/postgres?host={self.state_dir}/postgres"
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(
                "CREATE TABLE bench_commit_probe (id bigserial PRIMARY KEY, data bytea NOT NULL)"
            )
            payload = os.urandom(40)
            commits, selects = [], []
            for _ in range(count):
                t0 = time.perf_counter()
                await conn.execute("INSERT INTO bench_commit_probe (data) VALUES ($1)", payload)
                commits.append((time.perf_counter() - t0) * 1000)
            for _ in range(count):
                t0 = time.perf_counter()
                await conn.fetchval("SELECT 1")
                selects.append((time.perf_counter() - t0) * 1000)
            sync = await conn.fetchval("SHOW synchronous_commit")
            await conn.execute("DROP TABLE bench_commit_probe")
        finally:
            await conn.close()
        commits.sort()
        selects.sort()
        return {
            "commit_p50_ms": rounded(percentile(commits, 0.5), 3),
            "commit_p99_ms": rounded(percentile(commits, 0.99), 3),
            "select1_p50_ms": rounded(percentile(selects, 0.5), 3),
            "synchronous_commit": sync,
            "count": count,
        }

    async def metrics(self) -> dict[str, float] | None:
        """Counters of every node, added up."""
        found = await scrape_metrics(f"http://127.0.0.1:{self.port}")
        for base in self.other_ws_bases:
            other = await scrape_metrics(base.replace("ws://", "http://").removesuffix("/ws"))
            if found is None or other is None:
                return found or other
            for key, value in other.items():
                found[key] = found.get(key, 0.0) + value
        return found


@dataclass
class ExternalWeft(Server):
    """A Weft server someone else started (--server-url): nothing to start or stop."""

    url: str = ""
    token: str | None = None

    async def start(self) -> None:
        port = urllib.parse.urlsplit(self.url).port
        self.port = port if port is not None else 80
        await wait_http_ok(f"{self.url}/healthz", None, 10)

    async def room(self) -> tuple[str, str]:
        return await create_notebook(self.url, self.token)

    async def metrics(self) -> dict[str, float] | None:
        return await scrape_metrics(self.url)

    def server_pids(self) -> list[int]:
        pid = listening_pid(self.port)
        return descendants(pid) if pid is not None else []

    def stop(self) -> None:
        pass


@dataclass
class ReferenceServer(Server):
    async def start(self) -> None:
        self.log_path = _open_log("weft-bench-reference-")
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port)}
        for name in ("YPERSISTENCE", "CALLBACK_URL", "GC"):  # its defaults: in memory, gc on
            env.pop(name, None)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                ["node", str(REFERENCE_SERVER)],
                cwd=JS_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        log(f"@y/websocket-server on port {self.port} (pid {self.proc.pid})")
        await wait_http_ok(f"http://127.0.0.1:{self.port}/", self.proc, 30)

    async def room(self) -> tuple[str, str]:
        return f"ws://127.0.0.1:{self.port}", f"bench-{uuid.uuid4().hex[:12]}"

    def stop(self) -> None:
        stop_process(self.proc, 5)
        if self.log_path is not None and not self.keep_log:
            self.log_path.unlink(missing_ok=True)  # only worth keeping when the run failed


@dataclass
class PeerServer(Server):
    """A persisting peer (bench/peers.py): a child process on 127.0.0.1 with its own SQLite
    file in a fresh temporary directory, deleted at the end."""

    state_dir: Path | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    async def start(self) -> None:
        if self.state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix=f"weft-bench-{self.name}-"))
        self.log_path = self.log_path or _open_log(f"weft-bench-{self.name}-")
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.state_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        log(f"{self.name} on port {self.port} (pid {self.proc.pid}, log {self.log_path})")
        await wait_http_ok(f"http://127.0.0.1:{self.port}/", self.proc, 60)

    async def room(self) -> tuple[str, str]:
        return f"ws://127.0.0.1:{self.port}", f"bench-{uuid.uuid4().hex[:12]}"

    def restart_keep_state(self) -> None:
        """Stop the process only (its store stays): the next start() loads from it."""
        stop_process(self.proc, 10)
        self.proc = None

    def stop(self) -> None:
        stop_process(self.proc, 10)
        if self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        if self.log_path is not None and not self.keep_log:
            self.log_path.unlink(missing_ok=True)


@dataclass
class JupyterServer(PeerServer):
    """Jupyter's stack: pycrdt-websocket + pycrdt-store's SQLiteYStore on uvicorn."""

    def command(self) -> list[str]:
        assert self.state_dir is not None
        return [
            str(peers.ensure_jupyter()),
            str(peers.JUPYTER_SERVER),
            "--port",
            str(self.port),
            "--db",
            str(self.state_dir / ".jupyter_ystore.db"),
        ]


@dataclass
class HocuspocusServer(PeerServer):
    """Hocuspocus 4 + its SQLite extension; clients use @hocuspocus/provider."""

    provider: str = "hocuspocus"

    def command(self) -> list[str]:
        assert self.state_dir is not None
        peers.ensure_hocuspocus()
        return [
            "node",
            str(peers.HOCUSPOCUS_SERVER),
            str(self.port),
            str(self.state_dir / "db.sqlite"),
        ]


async def sign_up(base: str) -> str:
    """A fresh account's bearer token (Weft needs one for every call and socket)."""
    body = {
        "email": f"bench-{uuid.uuid4().hex[:12]}@example.org",
        "password": f"bench {uuid.uuid4().hex}",
        "name": "Bench",
    }
    status, answer = await asyncio.to_thread(http_json, "POST", f"{base}/api/auth/signup", body)
    if status != 201:
        raise BenchError(
            f"POST /api/auth/signup answered {status}: {answer} (pass --token to use an account)"
        )
    return str(answer["token"])


async def create_notebook(base: str, token: str | None = None) -> tuple[str, str]:
    """(WebSocket base, room): the room is the notebook id with the token as ?token=, which
    y-websocket appends to its base URL as it is."""
    if token is None:
        token = await sign_up(base)
    status, workspace = await asyncio.to_thread(
        http_json, "POST", f"{base}/api/workspaces", {"name": "bench"}, token
    )
    if status != 201:
        raise BenchError(f"POST /api/workspaces answered {status}: {workspace}")
    status, notebook = await asyncio.to_thread(
        http_json,
        "POST",
        f"{base}/api/workspaces/{workspace['id']}/notebooks",
        {"title": "bench"},
        token,
    )
    if status != 201:
        raise BenchError(f"POST /api/workspaces/.../notebooks answered {status}: {notebook}")
    parts = urllib.parse.urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    room = f"{notebook['id']}?{urllib.parse.urlencode({'token': token})}"
    return f"{scheme}://{parts.netloc}/ws", room


_SAMPLE = re.compile(r"^(weft_[a-zA-Z0-9_]*(?:_total|_count|_sum))(\{[^}]*\})? ([-+0-9.eE]+)$")


async def scrape_metrics(base: str) -> dict[str, float] | None:
    """Weft's counters (`*_total`, `*_count`, `*_sum`) from GET /metrics; None if absent."""

    def fetch() -> str | None:
        try:
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
                return str(response.read().decode())
        except (OSError, urllib.error.HTTPError):
            return None

    text = await asyncio.to_thread(fetch)
    if text is None:
        return None
    found = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            found[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return found


def read_log_problems(path: Path | None, offset: int) -> list[dict[str, Any]]:
    """Warning and error lines, and lines that are not JSON (a traceback), of a JSON-lines
    server log, written after byte `offset` (the startup banner comes before it)."""
    if path is None or not path.exists():
        return []
    with path.open("rb") as log_file:
        log_file.seek(offset)
        text = log_file.read().decode(errors="replace")
    problems = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if line.strip():
                problems.append({"raw": line[:500]})
            continue
        if not isinstance(entry, dict):
            problems.append({"raw": line[:500]})
        elif str(entry.get("level", "")).lower() in ("warning", "error", "critical"):
            problems.append(entry)
    return problems


# --- the load generator -----------------------------------------------------------------


@dataclass
class NodeProc:
    proc: asyncio.subprocess.Process
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                await self.events.put(json.loads(line))
            except json.JSONDecodeError:
                log(f"load generator {self.proc.pid} printed: {line[:200]!r}")
        await self.events.put({"event": "exit"})

    async def expect(self, name: str, timeout: float) -> dict[str, Any]:
        try:
            event = await asyncio.wait_for(self.events.get(), timeout)
        except TimeoutError:
            raise BenchError(
                f"load generator {self.proc.pid}: no {name!r} within {timeout:.0f} s"
            ) from None
        if event.get("event") == "error":
            raise BenchError(f"load generator {self.proc.pid}: {event.get('message')}")
        if event.get("event") != name:
            raise BenchError(f"load generator {self.proc.pid}: expected {name!r}, got {event}")
        return event

    async def send(self, message: dict[str, Any]) -> None:
        if self.proc.stdin is None or self.proc.stdin.is_closing():
            return
        with contextlib.suppress(ConnectionError):
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            await self.proc.stdin.drain()

    async def close(self) -> None:
        if self.proc.returncode is None:
            await self.send({"cmd": "exit"})
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


@contextlib.asynccontextmanager
async def load_generators(
    server: Server, url: str, room: str, init: bool, args: argparse.Namespace, procs: int
) -> AsyncIterator[list[NodeProc]]:
    started: list[NodeProc] = []
    try:
        for p in range(procs):
            bases = [url, *server.other_ws_bases]
            config = {
                "url": bases[p % len(bases)],
                "room": room,
                "ids": list(range(p, args.clients, procs)),
                "total": args.clients,
                "rate": args.rate,
                "duration": args.duration,
                "warmup": args.warmup,
                "init": init and p == 0,
                "seed": args.seed,
                "quietMs": int(args.quiet * 1000),
                "settleMs": 500,
                "readyTimeoutMs": 60_000,
                "provider": server.provider,
            }
            proc = await asyncio.create_subprocess_exec(
                "node",
                str(JS_DIR / "clients.mjs"),
                json.dumps(config),
                cwd=JS_DIR,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 28,  # the result is one long line
            )
            node = NodeProc(proc)
            node.reader = asyncio.create_task(node.read())
            started.append(node)
        yield started
    finally:
        for node in started:
            await node.close()


# --- one run ----------------------------------------------------------------------------


def percentile(ordered: list[float], q: float) -> float:
    """Nearest rank on a sorted list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def keep_log_if_failed(server: Server, result: dict[str, Any]) -> None:
    """Before ``server.stop()``: keep its log (and name it in ``result``) when the run
    failed, one of its steps did, or the server exited by itself."""
    steps = result.get("steps") or []
    exited = server.proc is not None and server.proc.poll() is not None
    if "error" in result or exited or any("error" in step for step in steps):
        server.keep_log = True
        if server.log_path is not None:
            result["server_log"] = str(server.log_path)
            log(f"{server.name}: its log is kept in {server.log_path}")


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


async def run_one(server: Server, args: argparse.Namespace, procs: int) -> dict[str, Any]:
    await server.start()
    url, room = await server.room()
    notebook = room.split("?")[0]  # not the token
    log(f"{server.name}: {args.clients} clients in {procs} process(es) joining {url} {notebook}")
    log_offset = server.log_offset()
    async with load_generators(server, url, room, server.init_cell, args, procs) as nodes:
        for node in nodes:
            await node.expect("ready", 90)
        loadgen_pids = [node.proc.pid for node in nodes]
        at = time.time() * 1000 + 500
        for node in nodes:
            await node.send({"cmd": "start", "at": at})
        log(f"{server.name}: typing for {args.warmup} s (warm-up) + {args.duration} s")
        # Resources are counted from the end of the warm-up to the end of the quiet period.
        await asyncio.sleep(max(0.0, at / 1000 + args.warmup - time.time()))
        server_pids, pg_pids = server.server_pids(), server.postgres_pids() or []
        metrics0 = await server.metrics()
        cpu0 = cpu_seconds(server_pids), cpu_seconds(pg_pids), cpu_seconds(loadgen_pids)
        busy0, own0 = machine_busy_seconds(), cpu_seconds([os.getpid()])
        per_proc0 = [cpu_seconds([pid]) for pid in loadgen_pids]
        wall0 = time.monotonic()
        bound = args.duration + 2 * args.quiet + 60 + args.warmup
        results = [await node.expect("result", bound) for node in nodes]
        wall = time.monotonic() - wall0
        server_alive = bool(server_pids) and bool(server.server_pids())
        pg_pids = server.postgres_pids() or pg_pids
        cpu1 = cpu_seconds(server_pids), cpu_seconds(pg_pids), cpu_seconds(loadgen_pids)
        busy1, own1 = machine_busy_seconds(), cpu_seconds([os.getpid()])
        per_proc1 = [cpu_seconds([pid]) for pid in loadgen_pids]
        metrics1 = await server.metrics()
        server_rss = peak_rss_mb(server_pids[0]) if server_pids else None
        pg_rss = [peak_rss_mb(pid) for pid in pg_pids]

    other = (busy1 - busy0) - (own1 - own0) - (sum(cpu1) - sum(cpu0))
    commit_rtt = None
    if isinstance(server, WeftServer) and server.nodes == 1:
        try:
            commit_rtt = await server.commit_round_trip()
        except (OSError, Exception) as exc:  # a probe: never fail the run for it
            log(f"{server.name}: commit round trip not measured: {exc}")
    if args.dump is not None:
        dump = args.dump.with_name(f"{args.dump.stem}-{server.name}{args.dump.suffix}")
        dump.write_text(json.dumps({"at": at, "results": results}))
        log(f"{server.name}: raw samples in {dump}")
    report = summarize(results, args)
    node_count = 1 + len(server.other_ws_bases)
    if node_count > 1:
        # Process p serves clients p, p + procs, ... on node p % nodes (load_generators).
        report.update(by_node(results, lambda client: (client % procs) % node_count))
    pg_known = server.postgres_pids() is not None or bool(pg_pids)
    report.update(
        {
            "server_cpu_s": rounded(cpu1[0] - cpu0[0]) if server_alive else None,
            "postgres_cpu_s": rounded(cpu1[1] - cpu0[1]) if pg_known else None,
            "server_peak_rss_mb": server_rss,
            "postgres_peak_rss_mb": rounded(sum(r for r in pg_rss if r), 1) if pg_known else None,
            "loadgen_procs": procs,
            "loadgen_cpu_s": rounded(cpu1[2] - cpu0[2]),
            "loadgen_max_proc_util": rounded(
                max(b - a for a, b in zip(per_proc0, per_proc1, strict=True)) / wall
            ),
            "wall_s": rounded(wall),
            # Everything else the machine did meanwhile (other users' jobs): noise.
            "other_cpu_s": rounded(other),
            # Cores' worth of it: above ~0.1 the run was disturbed; discard it.
            "other_cores": rounded(other / wall),
        }
    )
    if commit_rtt is not None:
        # The embedded PostgreSQL's commit round trip, after the run (item 3 of issue 16).
        report["pg_commit_round_trip"] = commit_rtt
    if metrics0 is not None and metrics1 is not None:
        # What the server itself counted over the measured phase (only what changed).
        report["server_metrics"] = {
            key: round(value - metrics0.get(key, 0.0), 4)
            for key, value in sorted(metrics1.items())
            if value != metrics0.get(key, 0.0)
        }
    if server.proc is not None and server.proc.poll() is not None:
        report["server_exited"] = server.proc.returncode  # it died during the run
    problems = server.log_problems(log_offset)
    if server.log_path is not None and isinstance(server, WeftServer):
        report["server_log_warnings"] = len(problems)
        if problems or "server_exited" in report or args.keep_logs:
            server.keep_log = True
            report["server_log"] = str(server.log_path)
        if problems:
            report["server_log_first"] = problems[:3]
    return report


def summarize(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    per_client = round(args.rate * args.duration)
    clients = [c for r in results for c in r["clients"]]
    edit_at: dict[tuple[int, int], float] = {}
    late: list[float] = []
    for c in clients:
        for n, t in enumerate(c["edits"]):
            if t is not None:
                edit_at[(c["id"], n)] = t
        late.extend(c["late"])
    delays: list[float] = []
    first: dict[tuple[int, int], float] = {}  # per edit: the first and last observer's delay
    last: dict[tuple[int, int], float] = {}
    for c in clients:
        obs = c["obs"]
        for i in range(0, len(obs), 3):
            key = (obs[i], obs[i + 1])
            delay = obs[i + 2] - edit_at[key]
            delays.append(delay)
            first[key] = min(first.get(key, delay), delay)
            last[key] = max(last.get(key, delay), delay)
    delays.sort()
    firsts = sorted(first.values())
    spreads = sorted(last[key] - first[key] for key in first)
    late.sort()
    expected = len(edit_at) * (args.clients - 1)
    hashes = {c["hash"] for c in clients}
    converged = len(clients) == args.clients and len(hashes) == 1
    return {
        "p50_ms": rounded(percentile(delays, 0.5)) if delays else None,
        "p99_ms": rounded(percentile(delays, 0.99)) if delays else None,
        "max_ms": rounded(delays[-1]) if delays else None,
        "min_ms": rounded(delays[0]) if delays else None,
        "mean_ms": rounded(sum(delays) / len(delays)) if delays else None,
        # The first other client to see an edit (ingest, persist, first send), and how much
        # later the last one saw it (fan-out to everyone, and the observers' own delays).
        "first_observer_p50_ms": rounded(percentile(firsts, 0.5)) if firsts else None,
        "first_observer_p99_ms": rounded(percentile(firsts, 0.99)) if firsts else None,
        "fanout_spread_p50_ms": rounded(percentile(spreads, 0.5)) if spreads else None,
        "fanout_spread_p99_ms": rounded(percentile(spreads, 0.99)) if spreads else None,
        "edits": len(edit_at),
        "observations": len(delays),
        "missing_observations": expected - len(delays),
        "duplicate_observations": sum(c["duplicates"] for c in clients),
        "converged": converged,
        "final_stamps": min(c["stamps"] for c in clients) if clients else 0,
        "expected_stamps": args.clients * per_client,
        "text_chars": max(c["chars"] for c in clients) if clients else 0,
        "all_seen_ms": rounded(max(r["all_seen_ms"] for r in results)),
        "edit_late_p99_ms": rounded(percentile(late, 0.99)) if late else None,
        "loadgen_loop_delay_p99_ms": rounded(max(r["loop_delay_ms"]["p99"] for r in results)),
        "loadgen_loop_delay_max_ms": rounded(max(r["loop_delay_ms"]["max"] for r in results)),
        # Connection closes during the run, by close code (and reason).
        "disconnects": merge_counts(
            {f"{d['code']} {d['reason']}".strip(): 1} for r in results for d in r["disconnects"]
        ),
        # What the clients received in the measured phase, all clients together.
        "frames_in": merge_counts(r["frames_in"] for r in results),
        "bytes_in": sum(r["bytes_in"] for r in results),
        # Update frames a client received twice, byte for byte (no-ops that still cost).
        "duplicate_update_frames": sum(r["duplicate_update_frames"] for r in results),
    }


def by_node(results: list[dict[str, Any]], node_of: Callable[[int], int]) -> dict[str, Any]:
    """Delays split by whether the editor and the observer were on the same node."""
    clients = [c for r in results for c in r["clients"]]
    edit_at = {(c["id"], n): t for c in clients for n, t in enumerate(c["edits"]) if t is not None}
    split: dict[bool, list[float]] = {True: [], False: []}
    for c in clients:
        obs = c["obs"]
        for i in range(0, len(obs), 3):
            author = obs[i]
            split[node_of(author) == node_of(c["id"])].append(
                obs[i + 2] - edit_at[(author, obs[i + 1])]
            )
    report: dict[str, Any] = {}
    for same, name in ((True, "same_node"), (False, "cross_node")):
        delays = sorted(split[same])
        report[f"{name}_p50_ms"] = rounded(percentile(delays, 0.5)) if delays else None
        report[f"{name}_p99_ms"] = rounded(percentile(delays, 0.99)) if delays else None
        report[f"{name}_observations"] = len(delays)
    return report


def merge_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for one in counts:
        for key, value in one.items():
            merged[key] = merged.get(key, 0) + value
    return dict(sorted(merged.items()))


# --- setup and main -----------------------------------------------------------------------


def ensure_node_modules() -> None:
    """`npm ci` in bench/js when node_modules is missing or older than the lock file."""
    marker = JS_DIR / "node_modules" / ".package-lock.json"
    newest = max((JS_DIR / n).stat().st_mtime for n in ("package.json", "package-lock.json"))
    if marker.exists() and marker.stat().st_mtime >= newest and REFERENCE_SERVER.exists():
        return
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise BenchError("node and npm are needed (Node 20 or later)")
    # --ignore-scripts: nothing here needs an install script (leveldown, an optional
    # dependency of the reference server that is never used in memory, ships prebuilds).
    log("npm ci in bench/js")
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=JS_DIR,
        check=True,
        timeout=600,
        stdout=sys.stderr,
    )


def git_revision() -> str | None:
    """The commit benchmarked, with `+dirty` when collab/ has uncommitted changes (read-only)."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", "collab"],
            cwd=ROOT,
            capture_output=True,
            timeout=10,
        ).returncode
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


# Every server the harness knows, in the default order of one invocation.
SERVER_NAMES = ("weft", "reference", "jupyter", "hocuspocus")
# With --weft-src: Weft from that source tree, under this name (e.g. the commit before a change).
BEFORE = "weft_before"


def make_server(name: str, args: argparse.Namespace) -> Server:
    if name == "reference":
        return ReferenceServer(name=name, init_cell=True)
    if name == "jupyter":
        return JupyterServer(name=name, init_cell=True)
    if name == "hocuspocus":
        return HocuspocusServer(name=name, init_cell=True)
    if name == BEFORE:
        return WeftServer(name=name, init_cell=False, src=args.weft_src)
    if getattr(args, "server_url", None):
        return ExternalWeft(
            name=name, init_cell=False, url=args.server_url.rstrip("/"), token=args.token
        )
    return WeftServer(name=name, init_cell=False, nodes=2 if name.endswith("2nodes") else 1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", "-C", type=int, default=20, help="clients (default 20)")
    parser.add_argument(
        "--nodes",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: also run Weft on two nodes sharing one PostgreSQL, clients split over both",
    )
    parser.add_argument("--rate", "-R", type=float, default=10, help="edits/s per client")
    parser.add_argument("--duration", "-D", type=float, default=10, help="seconds of typing")
    parser.add_argument(
        "--only", choices=list(SERVER_NAMES), help="run one server only (same as --servers NAME)"
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVER_NAMES),
        help="comma-separated servers to run, in this order (default: all: "
        + ",".join(SERVER_NAMES)
        + ")",
    )
    parser.add_argument(
        "--server-url", help="an already running Weft server (http://HOST:PORT) to target"
    )
    parser.add_argument(
        "--token", help="with --server-url: an account's bearer token (default: sign up)"
    )
    parser.add_argument(
        "--weft-src",
        type=Path,
        help="also run Weft from this source tree (collab/ and executor/ of another commit, "
        f"e.g. from `git archive`) as {BEFORE!r}, with this venv: where --servers names "
        "it, else right after 'weft'",
    )
    parser.add_argument(
        "--procs",
        type=int,
        default=0,
        help=f"load-generator processes (default: one per {CLIENTS_PER_PROC} clients)",
    )
    parser.add_argument(
        "--warmup", type=float, default=2, help="seconds of unmeasured typing first (default 2)"
    )
    parser.add_argument("--quiet", type=float, default=10, help="max wait for quiet after typing")
    parser.add_argument("--seed", type=int, default=1, help="seed of the clients' timer phases")
    parser.add_argument(
        "--dump", type=Path, help="also write each run's raw samples to PATH-<server>.json"
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep Weft's server log in /tmp after every run (default: only when it warned)",
    )
    args = parser.parse_args(argv)
    if not 2 <= args.clients <= 500:
        parser.error("--clients must be 2..500")
    if not (0 < args.rate <= 1000 and 0 < args.duration <= 600 and 0 < args.quiet <= 120):
        parser.error("--rate, --duration and --quiet must be positive and bounded")
    if not 0 <= args.warmup <= 60:
        parser.error("--warmup must be 0..60")
    if args.only:
        args.servers = args.only
    args.servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = [name for name in args.servers if name not in (*SERVER_NAMES, BEFORE)]
    if BEFORE in args.servers and args.weft_src is None:
        parser.error(f"--servers: {BEFORE} needs --weft-src")
    if unknown or not args.servers:
        parser.error(f"--servers: unknown {unknown}; choose from {', '.join(SERVER_NAMES)}")
    if args.weft_src is not None:
        clis = ("collab/server/cli.py", "collab/cli.py")
        if not any((args.weft_src / cli).exists() for cli in clis):
            parser.error("--weft-src: no collab/server/cli.py (or collab/cli.py) there")
        args.weft_src = args.weft_src.resolve()
        # Named in --servers, it runs where it is named (run pairs in both orders: the
        # second server of a pair meets a warmer machine); otherwise right after 'weft'.
        if BEFORE not in args.servers:
            where = args.servers.index("weft") + 1 if "weft" in args.servers else 0
            args.servers.insert(where, BEFORE)
    if args.server_url and "weft" not in args.servers:
        parser.error("--server-url targets a Weft server; it needs weft among --servers")
    if args.server_url and not re.match(r"^https?://", args.server_url):
        parser.error("--server-url must look like http://127.0.0.1:8000")
    return args


async def amain(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    procs = args.procs or max(1, math.ceil(args.clients / CLIENTS_PER_PROC))
    if args.nodes == 2:
        # At least one load generator per node, and the same split for every run compared.
        procs = max(procs, 2)
    line: dict[str, Any] = {
        "bench": "sync_latency",
        "C": args.clients,
        "R": int(args.rate) if args.rate == int(args.rate) else args.rate,
        "D": int(args.duration) if args.duration == int(args.duration) else args.duration,
        "warmup_s": args.warmup,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "rev": git_revision(),
    }
    failed = False
    names = list(args.servers)
    if args.nodes == 2 and "weft" in names:
        names.insert(names.index("weft") + 1, "weft_2nodes")
    line["order"] = names
    for name in names:
        server = make_server(name, args)
        try:
            line[name] = await run_one(server, args, procs)
        except (BenchError, OSError, RuntimeError, subprocess.SubprocessError) as exc:
            failed = True
            line[name] = {"error": str(exc)}
            server.keep_log = True
            if server.log_path is not None:
                line[name]["server_log"] = str(server.log_path)
            log(f"{name}: {exc}")
        finally:
            server.stop()
    weft, ref = line.get("weft", {}), line.get("reference", {})
    if weft.get("p50_ms") is not None and ref.get("p50_ms"):
        line["ratio"] = {
            key: rounded(weft[f"{key}_ms"] / ref[f"{key}_ms"]) if ref[f"{key}_ms"] else None
            for key in ("p50", "p99", "max")
        }
    # Weft / each other server, the same way (below 1: Weft is faster).
    others = [n for n in (BEFORE, "reference", "jupyter", "hocuspocus") if n in line]
    if weft.get("p50_ms") is not None and others:
        line["weft_over"] = {
            other: {
                key: rounded(weft[f"{key}_ms"] / line[other][f"{key}_ms"])
                if line[other].get(f"{key}_ms")
                else None
                for key in ("p50", "p99", "max")
            }
            for other in others
        }
    two = line.get("weft_2nodes", {})
    if two.get("p50_ms") is not None and weft.get("p50_ms"):
        line["cross_node_ratio"] = {
            key: rounded(two[f"{key}_ms"] / weft[f"{key}_ms"]) for key in ("p50", "p99")
        }
    print(json.dumps(line), flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ensure_node_modules()
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    except asyncio.CancelledError:
        log("terminated; everything started was stopped")
        return 143
    except (BenchError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log(f"failed: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
