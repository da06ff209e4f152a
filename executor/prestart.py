"""A notebook's kernel starts when a person who may run code opens it, as Jupyter starts a
kernel with the notebook, so their first commit finds it ready instead of waiting for a
container (docs/executor.md, "Kernel start").

Only on a server that hosts kernels itself (WEFT_EXECUTOR on): a worker elsewhere claims
runs from the queue without affinity, so a kernel started here for it would be wasted. A
prestart never evicts another notebook's kernel (a commit may), and a kernel nobody uses
is reaped after WEFT_KERNEL_IDLE_SECONDS like any other.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

from collab.auth.access import Principal, Role
from collab.document.schema import KernelState
from collab.sync.hooks import RoomHooks
from collab.sync.room import Room
from executor.environments import EnvironmentFailure
from executor.kernel import KernelError
from executor.run_states import now
from executor.volumes import VolumeError

if TYPE_CHECKING:
    from executor.service import Executor

log = logging.getLogger(__name__)


class KernelPrestart(RoomHooks):
    """Starts the kernel of a notebook an editor opens (``person_joined``), in the
    executor's task group; one start at a time per notebook."""

    def __init__(self, executor: Executor, tg: TaskGroup) -> None:
        self._executor = executor
        self._tg = tg
        self._starting: set[uuid.UUID] = set()

    def person_joined(self, room: Room, principal: Principal) -> None:
        notebook_id = room.notebook_id
        if principal.role < Role.EDITOR or notebook_id in self._starting:
            return
        kernels = self._executor.kernels
        kernel = kernels.current(notebook_id)
        if kernel is not None and kernel.alive:
            return
        if len(kernels) >= self._executor.settings.max_kernels:
            return  # all slots taken: the first commit starts it (and may evict an idle one)
        self._starting.add(notebook_id)
        self._tg.start_soon(self._start, notebook_id, str(principal.user_id))

    async def _start(self, notebook_id: uuid.UUID, user_id: str) -> None:
        extra = {"notebook_id": str(notebook_id), "user_id": user_id}
        try:
            # The person's browser loads the notebook first (config.prestart_delay_s).
            await anyio.sleep(self._executor.settings.prestart_delay_s)
            kernel = self._executor.kernels.current(notebook_id)
            if kernel is not None and kernel.alive:
                return  # a commit started it meanwhile
            await self._start_kernel(notebook_id)
            log.info("kernel started on open", extra=extra)
        except (KernelError, VolumeError, EnvironmentFailure) as exc:
            # The status light says why (the environment's error names the requirement);
            # the first commit tries again and shows it in the cell.
            log.warning("kernel start on open failed: %s", exc, extra=extra)
        except LookupError:
            pass  # the notebook was deleted meanwhile
        except Exception:
            log.exception("kernel start on open failed", extra=extra)
        finally:
            self._starting.discard(notebook_id)

    async def _start_kernel(self, notebook_id: uuid.UUID) -> None:
        executor = self._executor
        row = await executor.services.catalog.get_notebook(notebook_id)
        workspace_id = uuid.UUID(row["workspace_id"])
        # Off the loop: the workspace's filesystem may be made and mounted now.
        workspace_dir = await anyio.to_thread.run_sync(executor.files.workspace_root, workspace_id)
        network = await executor.network_allowed(workspace_id)
        client = executor.kernels.client
        if client is None:
            return  # no Docker engine: the first commit says so in the cell
        async with executor.notebooks.open(notebook_id) as notebook:
            if executor.in_progress.running(notebook_id):
                return  # a commit got here first and starts it itself
            # The notebook's own packages first (their progress shows in the status light),
            # so the kernel the first commit finds has them mounted.
            environment = await executor.environments.prepare(notebook, client)
            if executor.in_progress.running(notebook_id):
                return
            notebook.set_kernel({"state": KernelState.STARTING, "since": now()})
            try:
                await executor.kernels.get(
                    notebook_id, workspace_dir, network, environment.mount, environment.image
                )
            except (KernelError, VolumeError) as exc:
                if not executor.in_progress.running(notebook_id):
                    notebook.set_kernel(
                        {"state": KernelState.DEAD, "since": now(), "error": str(exc)}
                    )
                raise
            # A run that began meanwhile owns the status now (busy, then idle).
            if not executor.in_progress.running(notebook_id):
                notebook.set_kernel({"state": KernelState.IDLE, "since": now()})
