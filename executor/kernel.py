"""A kernel: one long-lived, locked-down container running the cell runner, and the JSON-lines
protocol to it over the container's attached stdin/stdout (see docs/runner-protocol.md).

docker-py is synchronous, so its calls run in worker threads; the attached socket itself is
handed to asyncio and read without threads. What the container sends is hostile input
(executor.protocol): framed in linear time with a cap per message, validated, and accepted
only for the run in progress; anything else stops the kernel with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import anyio
import docker
import docker.errors
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from executor.config import ExecutorSettings
from executor.environments.mount import add_mount
from executor.kernel_requests import PendingRequests
from executor.phases import Phases
from executor.protocol import LineFramer, ProtocolViolation, parse_message

log = logging.getLogger(__name__)

RUNNER = ["python3", "-u", "/opt/weft/runner.py"]
_STDOUT, _STDERR = 1, 2
_READ_CHUNK = 1024 * 1024  # docker's frames are read in pieces of at most this
_PARSE_IN_THREAD = 256 * 1024  # longer lines are parsed off the event loop
_RUNNER_LOG_BYTES = 64 * 1024  # of the runner's stderr per kernel, into the server's log
_FINISHED_KEPT = 64


class KernelError(Exception):
    """The kernel could not start or died; the message says why and what to do."""


def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(version="auto", timeout=60)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise KernelError(
            f"no Docker engine answers ({exc}); start one with scripts/ensure-docker.sh"
        ) from None
    return client


def container_options(
    settings: ExecutorSettings,
    notebook_id: uuid.UUID,
    workspace_dir: Path,
    network: bool,
    environment: Path | None = None,
    image: str | None = None,
) -> dict[str, Any]:
    """Everything that locks a kernel down; one place, so a test can inspect it.
    ``environment``: the notebook's package set, mounted read-only (executor.environments);
    ``image``: the runtime image the notebook chose (None: the default one). Every runtime
    gets the same limits."""
    options = _locked_down(settings, notebook_id, workspace_dir, network)
    return add_mount({**options, "image": image or settings.image}, environment)


def _locked_down(
    settings: ExecutorSettings, notebook_id: uuid.UUID, workspace_dir: Path, network: bool
) -> dict[str, Any]:
    return {
        "image": settings.image,
        "command": RUNNER,
        "stdin_open": True,
        "tty": False,
        "detach": True,
        "user": f"{settings.kernel_uid}:{settings.kernel_uid}",
        "working_dir": "/workspace",
        "network_mode": "bridge" if network else "none",
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": f"{settings.memory_mb}m",
        # Same as mem_limit: no swap, so a memory hog is killed instead of thrashing.
        "memswap_limit": f"{settings.memory_mb}m",
        "nano_cpus": int(settings.cpus * 1e9),
        "pids_limit": settings.pids,
        "shm_size": f"{settings.shm_mb}m",
        # Its own cgroup namespace: the kernel sees its cgroup as the root, not the host's.
        "cgroupns": "private",
        # Nothing a cell prints is kept by the engine: output reaches us through attach,
        # and a json-file log would grow on the host's disk with every line printed.
        "log_config": {"type": "none"},
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={settings.tmp_mb}m,mode=1777"},
        "volumes": {str(workspace_dir): {"bind": "/workspace", "mode": "rw"}},
        "environment": {
            "HOME": "/tmp",
            "MPLCONFIGDIR": "/tmp",
            "PYTHONUNBUFFERED": "1",
            # The runner cuts outputs over this itself (the host enforces it either way).
            "WEFT_OUTPUT_MAX_BYTES": str(settings.output_max_bytes),
        },
        "labels": {
            "weft.kernel": "1",
            "weft.instance": settings.instance,
            "weft.notebook": str(notebook_id),
        },
    }


class KernelHooks(Protocol):
    """What a kernel tells whoever keeps it (``executor.kernels.KernelPool``)."""

    def kernel_stopped(self, kernel: Kernel) -> None:
        """The kernel's reader stopped: its container died or broke the protocol
        (``kernel.violation`` says how)."""


class Kernel:
    """One notebook's runner container.

    >>> kernel = await Kernel.start(client, settings, notebook_id, workspace_dir)
    >>> kernel.begin(run_id, cell_id)
    >>> await kernel.send({"type": "run", ...})
    >>> message = await kernel.receive()   # None once the runner is gone
    """

    def __init__(
        self,
        client: docker.DockerClient,
        container: Any,
        notebook_id: uuid.UUID,
        message_max_bytes: int = 32 * 1024 * 1024,
        hooks: KernelHooks | None = None,
    ):
        self._client = client
        self.container = container
        self.notebook_id = notebook_id
        self._writer: asyncio.StreamWriter | None = None
        self._send_messages: MemoryObjectSendStream[dict[str, Any]]
        self._receive_messages: MemoryObjectReceiveStream[dict[str, Any]]
        # Small: the reader waits for the run to take a message before it reads the next,
        # so a flood from the container is held back in the container, not in our memory.
        self._send_messages, self._receive_messages = anyio.create_memory_object_stream(8)
        self._reader_task: asyncio.Task[None] | None = None
        self._message_max_bytes = message_max_bytes
        self._ready = False
        self._log_left = _RUNNER_LOG_BYTES
        self.alive = False
        self.network = False
        self.environment: str | None = None  # the key of the package set it mounts
        self.image: str | None = None  # the runtime image it runs (None: the default)
        self.execution_count = 0
        self.last_used = anyio.current_time()
        # The run in progress (run id, cell id), and the runs that ended (for late output).
        self.current_run: tuple[str, str] | None = None
        self._finished: OrderedDict[str, str] = OrderedDict()
        # Why the kernel was stopped for breaking the protocol, and the run whose end it
        # forged, if that is what it did (a second `done` for a run that had ended).
        self.violation: str | None = None
        self.forged_run: tuple[str, str] | None = None
        # Who ran code here: user id -> (the share link they ran it through, their name).
        self.ran_by: dict[str, tuple[uuid.UUID | None, str | None]] = {}
        # Requests beside runs (completions, frame pages): executor.kernel_requests.
        self.requests = PendingRequests()
        # Told once the reader stops (the container died or broke the protocol).
        self._hooks = hooks

    @classmethod
    async def start(
        cls,
        client: docker.DockerClient,
        settings: ExecutorSettings,
        notebook_id: uuid.UUID,
        workspace_dir: Path,
        network: bool = False,
        environment: tuple[str, Path] | None = None,
        image: str | None = None,
        hooks: KernelHooks | None = None,
    ) -> Kernel:
        options = container_options(
            settings, notebook_id, workspace_dir, network, environment and environment[1], image
        )
        phases = Phases()
        try:
            # Shielded: a start cancelled meanwhile (an interrupt, a shutdown) would
            # otherwise drop the container the engine made, and leave it behind for good.
            # The next await raises the cancellation, and the container is removed.
            with anyio.CancelScope(shield=True):
                container = await anyio.to_thread.run_sync(
                    lambda: client.containers.create(
                        **{k: v for k, v in options.items() if k != "detach"}
                    )
                )
        except docker.errors.ImageNotFound:
            raise KernelError(
                f"runtime image {options['image']} is missing; build it with "
                "scripts/ensure-runtime-image.sh"
            ) from None
        except docker.errors.DockerException as exc:
            raise KernelError(f"could not create the kernel container: {exc}") from None
        phases.mark("create")
        kernel = cls(client, container, notebook_id, settings.message_max_bytes, hooks)
        kernel.network = network
        kernel.image = image
        kernel.environment = environment[0] if environment else None
        try:
            await kernel._attach_and_start(phases)
            try:
                with anyio.fail_after(60):
                    ready = await kernel._receive_messages.receive()
            except anyio.EndOfStream:
                raise KernelError(
                    f"the runner did not start: {kernel.violation or 'it exited'}"
                ) from None
            if ready.get("type") != "ready":
                raise KernelError(f"the runner did not start properly: {str(ready)[:200]}")
            phases.mark("ready")  # the runner's own start, in the container
        except BaseException:
            await kernel.remove()
            raise
        log.info(
            "kernel started",
            extra={
                "notebook_id": str(notebook_id),
                "container": container.short_id,
                "phases_ms": phases.ms,
            },
        )
        return kernel

    async def _attach_and_start(self, phases: Phases) -> None:
        def attach() -> socket.socket:
            params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            attached = self._client.api.attach_socket(self.container.id, params=params)
            raw: socket.socket = attached._sock
            raw.setblocking(False)
            return raw

        raw = await anyio.to_thread.run_sync(attach)
        reader, writer = await asyncio.open_connection(sock=raw, limit=64 * 1024 * 1024)
        self._writer = writer
        phases.mark("attach")
        await anyio.to_thread.run_sync(self.container.start)
        phases.mark("start")
        self.alive = True
        self._reader_task = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Demultiplex docker's attach stream; each stdout line is one protocol message."""
        framer = LineFramer(self._message_max_bytes)
        extra = {"notebook_id": str(self.notebook_id)}
        try:
            while True:
                header = await reader.readexactly(8)
                kind, size = header[0], struct.unpack(">I", header[4:])[0]
                while size > 0:
                    chunk = await reader.readexactly(min(size, _READ_CHUNK))
                    size -= len(chunk)
                    if kind == _STDERR:
                        self._log_stderr(chunk)
                        continue
                    for line in framer.feed(chunk):
                        if len(line) > _PARSE_IN_THREAD:
                            message = await anyio.to_thread.run_sync(parse_message, line)
                        else:
                            message = parse_message(line)
                        await self._dispatch(message)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except ProtocolViolation as exc:
            self.violation = exc.reason
            log.warning("kernel broke the runner protocol: %s", exc.reason, extra=extra)
        finally:
            self.alive = False
            self.requests.close(
                f"the kernel stopped ({self.violation or 'restarted or died'}) before it answered"
            )
            await self._send_messages.aclose()
            if self._hooks is not None:
                self._hooks.kernel_stopped(self)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        """Pass on what belongs to the run in progress; drop late output of runs that ended;
        anything else breaks the protocol."""
        kind = message["type"]
        if kind == "ready":
            if self._ready:
                raise ProtocolViolation("the kernel said 'ready' a second time")
            self._ready = True
            await self._send_messages.send(message)
            return
        if kind == "protocol_error":
            raise ProtocolViolation(f"the runner refused a request: {message['detail'][:500]}")
        if kind == "response":
            self.requests.deliver(message)
            return
        run_id = message.get("run_id")
        if self.current_run is not None and run_id == self.current_run[0]:
            await self._send_messages.send(message)
            return
        if kind == "done" and isinstance(run_id, str) and run_id in self._finished:
            self.forged_run = (run_id, self._finished[run_id])
            raise ProtocolViolation(
                "the kernel sent a second 'done' for a run that had already ended: cell code "
                "wrote to the runner's channel, so what that run reported cannot be trusted"
            )
        if kind != "done" and (run_id is None or run_id in self._finished):
            return  # output of threads a finished run left running (runner-protocol.md)
        raise ProtocolViolation(f"the kernel sent a '{kind}' message for a run not in progress")

    def _log_stderr(self, chunk: bytes) -> None:
        """The runner's own stderr (its bugs) goes to our log, up to a budget per kernel:
        cell code can write there too, and must not fill the server's disk."""
        if self._log_left <= 0:
            return
        text = chunk[: self._log_left].decode(errors="replace").rstrip()
        self._log_left -= len(chunk)
        suffix = " [further runner stderr is not logged]" if self._log_left <= 0 else ""
        log.warning(
            "runner stderr: %s%s",
            text[:2000],
            suffix,
            extra={"notebook_id": str(self.notebook_id)},
        )

    def begin(self, run_id: str, cell_id: str) -> None:
        """From now on, messages of this run are passed on (call before sending it)."""
        self.current_run = (run_id, cell_id)

    def end(self) -> None:
        """The run in progress ended; its late output is dropped from now on."""
        if self.current_run is not None:
            run_id, cell_id = self.current_run
            self._finished[run_id] = cell_id
            while len(self._finished) > _FINISHED_KEPT:
                self._finished.popitem(last=False)
        self.current_run = None

    async def send(self, message: dict[str, Any]) -> None:
        if self._writer is None or not self.alive:
            raise KernelError("the kernel is not running")
        self._writer.write(json.dumps(message).encode() + b"\n")
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise KernelError(f"the kernel stopped accepting input: {exc}") from None
        self.last_used = anyio.current_time()

    async def receive(self) -> dict[str, Any] | None:
        """The next message from the runner; None once it has died."""
        try:
            message = await self._receive_messages.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):  # died, or removed
            return None
        self.last_used = anyio.current_time()
        return message

    async def interrupt(self) -> None:
        """SIGINT to the runner: the cell in progress ends with KeyboardInterrupt."""
        with contextlib.suppress(docker.errors.DockerException):
            await anyio.to_thread.run_sync(lambda: self.container.kill(signal="SIGINT"))

    async def death_reason(self, memory_mb: int) -> str:
        """Why the container stopped, in words a user can act on."""
        try:
            await anyio.to_thread.run_sync(self.container.reload)
        except docker.errors.DockerException:
            return "the kernel's container is gone"
        state = self.container.attrs.get("State", {})
        if state.get("OOMKilled"):
            return (
                f"the kernel ran out of memory (limit {memory_mb} MiB) and was restarted; "
                "use less memory or ask for a larger limit (WEFT_KERNEL_MEMORY_MB)"
            )
        if state.get("Running"):
            return "the kernel stopped answering"
        return f"the kernel exited with code {state.get('ExitCode')}"

    async def remove(self) -> None:
        self.alive = False
        self.requests.close("the kernel was restarted before it answered")
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
        else:  # never started: nothing else closes the sending side
            self._send_messages.close()
        # Closed here too once the reader ran (it closes only the sending side): left to
        # the collector, the stream warned at exit (a ResourceWarning, an error in tests).
        self._receive_messages.close()
        # Shielded (and bounded): removal is what a cancelled start or a shutdown does last.
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(30),
            contextlib.suppress(docker.errors.DockerException),
        ):
            await anyio.to_thread.run_sync(lambda: self.container.remove(force=True))
        log.info("kernel removed", extra={"notebook_id": str(self.notebook_id)})


async def remove_leftover_kernels(client: docker.DockerClient, instance: str) -> int:
    """Remove kernels an earlier run of this same server left behind (after a crash)."""

    def sweep() -> int:
        found = client.containers.list(all=True, filters={"label": f"weft.instance={instance}"})
        for container in found:
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)
        return len(found)

    return await anyio.to_thread.run_sync(sweep)
