"""Executor settings, read once from the environment (``WEFT_KERNEL_*``, ``WEFT_FILES_*``)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from collab.settings import Settings, env_float
from executor.environments.images import DEFAULT, RuntimeImage, RuntimeImages
from executor.environments.preparer import EnvironmentSettings


@dataclass(frozen=True)
class ExecutorSettings:
    """Limits and places for kernels and the file store.

    >>> ExecutorSettings.from_env(settings, {"WEFT_KERNEL_MEMORY_MB": "1024"})
    """

    files_root: Path
    # The default runtime image (``default``), and the others a notebook may choose
    # (WEFT_KERNEL_IMAGES: name -> image reference; executor.environments.images).
    image: str = "weft-runtime:latest"
    images: tuple[tuple[str, str], ...] = ()
    memory_mb: int = 512
    cpus: float = 1.0
    pids: int = 128
    tmp_mb: int = 64
    # Wall time of one cell: then SIGINT, then, after the grace, the kernel is killed.
    cell_timeout_s: float = 600.0
    interrupt_grace_s: float = 3.0
    idle_timeout_s: float = 900.0
    max_kernels: int = 8
    # Stream text kept per cell; past it a note says how much was dropped.
    output_cap_bytes: int = 1_000_000
    # One display, result or error; bigger ones are replaced by a note saying so.
    output_max_bytes: int = 5_000_000
    # All of one cell's outputs together, and how many there may be; then a note.
    cell_outputs_max_bytes: int = 10_000_000
    cell_outputs_max_count: int = 1000
    # One cell's symbols (the symbol table); the rest are summed up in one entry.
    symbols_max_bytes: int = 500_000
    # The outputs kept with a run for GET /api/runs/{id} (the notebook keeps its own).
    run_record_max_bytes: int = 2_000_000
    # One line of the runner protocol; past it the kernel is stopped (executor.protocol).
    message_max_bytes: int = 32 * 1024 * 1024
    shm_mb: int = 64
    # Workspace stores: "loop" (one ext4 image per workspace, the quota holds at write
    # time), "off" (plain folders, the quota is checked on uploads only), "auto" (loop
    # where this process may mount, else off with a warning).
    volumes: str = "auto"
    file_quota_bytes: int = 1_000_000_000
    upload_limit_bytes: int = 200_000_000
    lease_s: float = 15.0
    kernel_uid: int = 1000
    instance: str = "weft"
    # Run cells in this process (one machine, one command) or leave them to `weft executor`.
    in_process: bool = True
    # Start a notebook's kernel when an editor opens it (executor.prestart), this long after
    # they joined: their browser loads the notebook first (on a small node the container's
    # start competes with that for the CPU: a 1,000-cell notebook's join took 1.5-1.7x).
    prestart: bool = True
    prestart_delay_s: float = 1.0
    # Per-notebook environments: WEFT_ENV_DIR, WEFT_PACKAGE_INDEX_URL, WEFT_ENV_TIMEOUT_SECONDS.
    environments: EnvironmentSettings = field(
        default_factory=lambda: EnvironmentSettings(Path(".state/environments").resolve())
    )

    @property
    def runtimes(self) -> RuntimeImages:
        return RuntimeImages(
            (RuntimeImage(DEFAULT, self.image), *(RuntimeImage(n, i) for n, i in self.images))
        )

    @classmethod
    def from_env(cls, settings: Settings, env: Mapping[str, str] | None = None) -> ExecutorSettings:
        env = os.environ if env is None else env
        image = env.get("WEFT_KERNEL_IMAGE") or "weft-runtime:latest"
        runtimes = RuntimeImages.parse(image, env.get("WEFT_KERNEL_IMAGES"))
        return cls(
            files_root=Path(env.get("WEFT_FILES_DIR") or settings.state_dir / "files").resolve(),
            image=image,
            images=tuple((r.name, r.image) for r in runtimes.images[1:]),
            memory_mb=int(env_float(env, "WEFT_KERNEL_MEMORY_MB", 512)),
            cpus=env_float(env, "WEFT_KERNEL_CPUS", 1.0),
            pids=int(env_float(env, "WEFT_KERNEL_PIDS", 128)),
            tmp_mb=int(env_float(env, "WEFT_KERNEL_TMP_MB", 64)),
            cell_timeout_s=env_float(env, "WEFT_CELL_TIMEOUT_SECONDS", 600.0),
            interrupt_grace_s=env_float(env, "WEFT_INTERRUPT_GRACE_SECONDS", 3.0),
            idle_timeout_s=env_float(env, "WEFT_KERNEL_IDLE_SECONDS", 900.0),
            max_kernels=int(env_float(env, "WEFT_MAX_KERNELS", 8)),
            output_cap_bytes=int(env_float(env, "WEFT_OUTPUT_CAP_BYTES", 1_000_000)),
            output_max_bytes=int(env_float(env, "WEFT_OUTPUT_MAX_BYTES", 5_000_000)),
            cell_outputs_max_bytes=int(env_float(env, "WEFT_CELL_OUTPUTS_MAX_BYTES", 10_000_000)),
            cell_outputs_max_count=int(env_float(env, "WEFT_CELL_OUTPUTS_MAX_COUNT", 1000)),
            symbols_max_bytes=int(env_float(env, "WEFT_SYMBOLS_MAX_BYTES", 500_000)),
            run_record_max_bytes=int(env_float(env, "WEFT_RUN_RECORD_MAX_BYTES", 2_000_000)),
            message_max_bytes=int(
                env_float(env, "WEFT_KERNEL_MESSAGE_MAX_BYTES", 32 * 1024 * 1024)
            ),
            shm_mb=int(env_float(env, "WEFT_KERNEL_SHM_MB", 64)),
            volumes=(env.get("WEFT_FILES_VOLUMES") or "auto").lower(),
            file_quota_bytes=int(env_float(env, "WEFT_FILES_QUOTA_BYTES", 1_000_000_000)),
            upload_limit_bytes=int(env_float(env, "WEFT_UPLOAD_LIMIT_BYTES", 200_000_000)),
            lease_s=env_float(env, "WEFT_RUN_LEASE_SECONDS", 15.0),
            in_process=(env.get("WEFT_EXECUTOR") or "on").lower() not in ("off", "0", "false"),
            prestart=(env.get("WEFT_KERNEL_PRESTART") or "on").lower() not in ("off", "0", "false"),
            prestart_delay_s=env_float(env, "WEFT_KERNEL_PRESTART_DELAY_SECONDS", 1.0),
            environments=EnvironmentSettings.from_env(settings, env),
            # Containers left by an earlier run of this same server are removed at start.
            instance=env.get("WEFT_INSTANCE")
            or "weft-" + hashlib.sha256(str(settings.state_dir).encode()).hexdigest()[:12],
        )
