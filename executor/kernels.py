"""The kernel pool: at most one kernel per notebook, started on first use, reaped when idle."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import anyio
import docker

from executor.config import ExecutorSettings
from executor.kernel import Kernel, KernelError, KernelHooks

log = logging.getLogger(__name__)


class KernelPool:
    """
    >>> kernel = await pool.get(notebook_id, workspace_dir)
    >>> await pool.discard(notebook_id)   # restart: the next get starts a fresh one
    """

    def __init__(
        self,
        client: docker.DockerClient | None,
        settings: ExecutorSettings,
        hooks: KernelHooks | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._kernels: dict[uuid.UUID, Kernel] = {}
        self._starting: dict[uuid.UUID, anyio.Lock] = {}
        self.busy: set[uuid.UUID] = set()
        # Told when a kernel of the pool stops (its container died or broke the protocol);
        # not for one the pool discarded (see kernel_stopped).
        self._hooks = hooks

    def __len__(self) -> int:
        return len(self._kernels)

    def current(self, notebook_id: uuid.UUID) -> Kernel | None:
        return self._kernels.get(notebook_id)

    @property
    def client(self) -> docker.DockerClient | None:
        return self._client

    async def get(
        self,
        notebook_id: uuid.UUID,
        workspace_dir: Path,
        network: bool = False,
        environment: tuple[str, Path] | None = None,
        image: str | None = None,
    ) -> Kernel:
        """The notebook's kernel, started if needed; one with another network setting,
        another package set (``environment``: its key and directory) or another runtime image
        (``image``, None: the default) is replaced."""
        if self._client is None:
            raise KernelError(
                "no Docker engine answers, so cells cannot run; start one with "
                "scripts/ensure-docker.sh and restart the server"
            )
        key = environment[0] if environment else None
        image = image or self._settings.image

        def fits(kernel: Kernel | None) -> bool:
            return (
                kernel is not None
                and kernel.alive
                and kernel.network == network
                and kernel.environment == key
                and (kernel.image or self._settings.image) == image
            )

        kernel = self._kernels.get(notebook_id)
        if fits(kernel):
            assert kernel is not None
            return kernel
        lock = self._starting.setdefault(notebook_id, anyio.Lock())
        async with lock:
            kernel = self._kernels.get(notebook_id)
            if fits(kernel):
                assert kernel is not None
                return kernel
            if kernel is not None:
                await self.discard(notebook_id)
            if len(self._kernels) >= self._settings.max_kernels:
                await self._evict_idle()
            kernel = await Kernel.start(
                self._client,
                self._settings,
                notebook_id,
                workspace_dir,
                network,
                environment,
                image,
                hooks=self,
            )
            self._kernels[notebook_id] = kernel
            return kernel

    async def discard(self, notebook_id: uuid.UUID, kernel: Kernel | None = None) -> None:
        """Remove the notebook's kernel (only if it is still ``kernel``, when given)."""
        if kernel is not None and self._kernels.get(notebook_id) is not kernel:
            return
        kernel = self._kernels.pop(notebook_id, None)
        if kernel is not None:
            await kernel.remove()

    def mounted(self) -> set[str]:
        """The keys of the package sets this process's kernels mount (kept by cleanup)."""
        return {k.environment for k in self._kernels.values() if k.environment is not None}

    # -- KernelHooks (every kernel of the pool's) -----------------------------------------

    def kernel_stopped(self, kernel: Kernel) -> None:
        """Passed on only for a kernel still in the pool: one discarded (removed, replaced,
        restarted) stops because the pool stopped it."""
        if self._hooks is not None and self._kernels.get(kernel.notebook_id) is kernel:
            self._hooks.kernel_stopped(kernel)

    def held(self) -> list[Kernel]:
        return list(self._kernels.values())

    async def _evict_idle(self) -> None:
        idle = [k for nid, k in self._kernels.items() if nid not in self.busy]
        if not idle:
            raise KernelError(
                f"all {self._settings.max_kernels} kernels are busy; wait for a run to finish "
                "or raise WEFT_MAX_KERNELS"
            )
        oldest = min(idle, key=lambda k: k.last_used)
        await self.discard(oldest.notebook_id)

    async def reap_idle(self) -> None:
        now = anyio.current_time()
        for notebook_id, kernel in list(self._kernels.items()):
            if notebook_id in self.busy:
                continue
            if not kernel.alive or now - kernel.last_used > self._settings.idle_timeout_s:
                log.info("reaping idle kernel", extra={"notebook_id": str(notebook_id)})
                await self.discard(notebook_id)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            for notebook_id in list(self._kernels):
                await self.discard(notebook_id)
