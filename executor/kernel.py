"""A kernel: one long-lived, locked-down container running the cell runner, and the JSON-lines
protocol to it over the container's attached stdin/stdout (see docs/runner-protocol.md).

docker-py is synchronous, so its calls run in worker threads; the attached socket itself is
handed to asyncio and read without threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import docker
import docker.errors
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from executor.config import ExecutorSettings

log = logging.getLogger(__name__)

RUNNER = ["python3", "-u", "/opt/weft/runner.py"]
_STDOUT, _STDERR = 1, 2


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
    settings: ExecutorSettings, notebook_id: uuid.UUID, workspace_dir: Path, network: bool
) -> dict[str, Any]:
    """Everything that locks a kernel down; one place, so a test can inspect it."""
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
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={settings.tmp_mb}m,mode=1777"},
        "volumes": {str(workspace_dir): {"bind": "/workspace", "mode": "rw"}},
        "environment": {"HOME": "/tmp", "MPLCONFIGDIR": "/tmp", "PYTHONUNBUFFERED": "1"},
        "labels": {
            "weft.kernel": "1",
            "weft.instance": settings.instance,
            "weft.notebook": str(notebook_id),
        },
    }


class Kernel:
    """One notebook's runner container.

    >>> kernel = await Kernel.start(client, settings, notebook_id, workspace_dir)
    >>> await kernel.send({"type": "run", ...})
    >>> async for message in kernel.messages(): ...
    """

    def __init__(self, client: docker.DockerClient, container: Any, notebook_id: uuid.UUID):
        self._client = client
        self.container = container
        self.notebook_id = notebook_id
        self._writer: asyncio.StreamWriter | None = None
        self._send_messages: MemoryObjectSendStream[dict[str, Any]]
        self._receive_messages: MemoryObjectReceiveStream[dict[str, Any]]
        self._send_messages, self._receive_messages = anyio.create_memory_object_stream(10_000)
        self._reader_task: asyncio.Task[None] | None = None
        self.alive = False
        self.network = False
        self.execution_count = 0
        self.known_cells: set[str] = set()
        self.last_used = anyio.current_time()

    @classmethod
    async def start(
        cls,
        client: docker.DockerClient,
        settings: ExecutorSettings,
        notebook_id: uuid.UUID,
        workspace_dir: Path,
        network: bool = False,
    ) -> Kernel:
        options = container_options(settings, notebook_id, workspace_dir, network)
        try:
            container = await anyio.to_thread.run_sync(
                lambda: client.containers.create(
                    **{k: v for k, v in options.items() if k != "detach"}
                )
            )
        except docker.errors.ImageNotFound:
            raise KernelError(
                f"runtime image {settings.image} is missing; build it with "
                "scripts/ensure-runtime-image.sh"
            ) from None
        except docker.errors.DockerException as exc:
            raise KernelError(f"could not create the kernel container: {exc}") from None
        kernel = cls(client, container, notebook_id)
        kernel.network = network
        try:
            await kernel._attach_and_start()
            with anyio.fail_after(60):
                ready = await kernel._receive_messages.receive()
            if ready.get("type") != "ready":
                raise KernelError(f"the runner did not start properly: {ready}")
        except BaseException:
            await kernel.remove()
            raise
        log.info(
            "kernel started",
            extra={"notebook_id": str(notebook_id), "container": container.short_id},
        )
        return kernel

    async def _attach_and_start(self) -> None:
        def attach() -> socket.socket:
            params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            attached = self._client.api.attach_socket(self.container.id, params=params)
            raw: socket.socket = attached._sock
            raw.setblocking(False)
            return raw

        raw = await anyio.to_thread.run_sync(attach)
        reader, writer = await asyncio.open_connection(sock=raw, limit=64 * 1024 * 1024)
        self._writer = writer
        await anyio.to_thread.run_sync(self.container.start)
        self.alive = True
        self._reader_task = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Demultiplex docker's attach stream; each stdout line is one protocol message."""
        buffer = b""
        try:
            while True:
                header = await reader.readexactly(8)
                kind, size = header[0], struct.unpack(">I", header[4:])[0]
                payload = await reader.readexactly(size)
                if kind == _STDERR:
                    log.warning(
                        "runner stderr: %s",
                        payload.decode(errors="replace").rstrip()[:2000],
                        extra={"notebook_id": str(self.notebook_id)},
                    )
                    continue
                buffer += payload
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        await self._send_messages.send(json.loads(line))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except ValueError as exc:
            log.error(
                "runner sent a line that is not JSON: %s",
                exc,
                extra={"notebook_id": str(self.notebook_id)},
            )
        finally:
            self.alive = False
            await self._send_messages.aclose()

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
        except anyio.EndOfStream:
            return None
        self.last_used = anyio.current_time()
        return message

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        while (message := await self.receive()) is not None:
            yield message

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
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
        with contextlib.suppress(docker.errors.DockerException):
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
