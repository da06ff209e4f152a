"""A notebook's request -> the directory its kernel mounts, with progress for everyone.

>>> environments = Environments(EnvironmentSettings.from_env(settings), executor_settings.runtimes)
>>> prepared = await environments.prepare(notebook, client)   # writes status and record
>>> prepared.path   # None when the image has everything the request needs
>>> prepared.image  # the runtime image the notebook chose (meta.metadata.runtime)

While it works, the notebook's ``kernel`` map says so (``state: preparing`` with the step,
the package and how far, and the tail of the installer's log), so every collaborator sees
it live; a failure leaves ``state: dead`` with the named error (``environment_error``:
kind, requirement, message). The resolved set is written to ``meta.metadata.environment``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import docker
import docker.errors

from collab.document.schema import KernelState
from collab.settings import Settings, env_float
from collab.sync.peers import NotebookPeer
from executor.environments.errors import EnvironmentFailure
from executor.environments.images import RuntimeImage, RuntimeImages
from executor.environments.record import (
    make_record,
    recorded_packages,
    same_record,
    to_install,
)
from executor.environments.requirements import canonical, parse_requirements
from executor.environments.resolver import Package, resolve
from executor.environments.runtime import Runtime, probe_runtime
from executor.environments.store import EnvironmentStore, Removed

log = logging.getLogger(__name__)

_STATUS_EVERY_S = 0.25  # progress is written at most this often (each write is an edit)
_LOG_TAIL = 4000  # characters of the installer's log kept in the kernel status


@dataclass(frozen=True)
class EnvironmentSettings:
    root: Path
    index_url: str = "https://pypi.org/simple"
    timeout_s: float = 600.0
    # A resolution is reused for the same request on the same runtime for this long, so a
    # second notebook with the same dependencies starts without asking the index anything.
    resolution_ttl_s: float = 600.0
    # Sets no kernel was given for this long (and none mounts) are removed (0: never), every
    # clean_interval_s, first at start (EnvironmentStore.clean).
    keep_days: float = 30.0
    clean_interval_s: float = 6 * 3600.0

    @classmethod
    def from_env(
        cls, settings: Settings, env: Mapping[str, str] | None = None
    ) -> EnvironmentSettings:
        env = os.environ if env is None else env
        return cls(
            root=Path(env.get("WEFT_ENV_DIR") or settings.state_dir / "environments").resolve(),
            index_url=(env.get("WEFT_PACKAGE_INDEX_URL") or "https://pypi.org/simple").rstrip("/"),
            timeout_s=env_float(env, "WEFT_ENV_TIMEOUT_SECONDS", 600.0),
            resolution_ttl_s=env_float(env, "WEFT_ENV_RESOLUTION_TTL_SECONDS", 600.0),
            keep_days=env_float(env, "WEFT_ENV_KEEP_DAYS", 30.0),
            clean_interval_s=max(60.0, env_float(env, "WEFT_ENV_CLEAN_INTERVAL_SECONDS", 21600.0)),
        )


@dataclass(frozen=True)
class Prepared:
    """What a kernel for this notebook starts from: ``image`` (its runtime's reference) and
    the set it mounts, ``path`` (None: nothing beyond the image)."""

    key: str | None
    path: Path | None
    packages: tuple[Package, ...] = ()
    image: str | None = None  # None: the default runtime image

    @property
    def mount(self) -> tuple[str, Path] | None:
        """(key, directory) for the kernel, or None when there is nothing to mount."""
        return (self.key, self.path) if self.key is not None and self.path is not None else None


class _Status:
    """The kernel map's view of a preparation, written at most every _STATUS_EVERY_S."""

    def __init__(self, notebook: NotebookPeer, request: list[str]) -> None:
        self.notebook = notebook
        self.request = request
        self.since = datetime.now(UTC).isoformat()
        self.log: list[str] = []
        self._size = 0
        self._written = 0.0
        self.step: dict[str, Any] = {}

    def line(self, text: str) -> None:
        self.log.append(text)
        self._size += len(text) + 1
        while self._size > _LOG_TAIL and len(self.log) > 1:
            self._size -= len(self.log.pop(0)) + 1

    def resolving(self, text: str) -> None:
        """A line of pip's resolver: "Collecting NAME..." says which package it looks at."""
        self.line(text)
        if text.startswith("Collecting "):
            looked_at = int(self.step.get("done") or 0) + 1
            self.progress("resolving", text.split()[1], looked_at, 0)

    def progress(self, step: str, package: str | None, done: int, total: int) -> None:
        self.step = {"step": step, "package": package, "done": done, "total": total}
        now = time.monotonic()
        if now - self._written >= _STATUS_EVERY_S or done == total:
            self._written = now
            self.write()

    def write(self) -> None:
        self.notebook.set_kernel(
            {
                "state": KernelState.PREPARING,
                "since": self.since,
                "environment": {**self.step, "request": self.request},
                "log": "\n".join(self.log),
            }
        )

    def failed(self, failure: EnvironmentFailure) -> None:
        self.notebook.set_kernel(
            {
                "state": KernelState.DEAD,
                "since": datetime.now(UTC).isoformat(),
                "error": failure.message,
                "environment_error": failure.as_json(),
                "log": "\n".join(self.log),
            }
        )


class Environments:
    """Prepares environments for notebooks; one per executor process."""

    def __init__(self, settings: EnvironmentSettings, images: RuntimeImages) -> None:
        self.settings = settings
        self.images = images
        self.store = EnvironmentStore(settings.root, timeout=settings.timeout_s)
        self._runtimes: dict[tuple[str, str], Runtime] = {}  # (reference, image id)
        # (request, image id) -> (when, the set it resolved to)
        self._resolved: dict[tuple[tuple[str, ...], str], tuple[float, list[Package]]] = {}
        self._notebooks: dict[Any, anyio.Lock] = {}

    async def runtime(self, client: docker.DockerClient, image: str | None = None) -> Runtime:
        """What the runtime image ``image`` (default: the default runtime's) is."""
        reference = image or self.images.default.image
        try:
            image_id = await anyio.to_thread.run_sync(lambda: str(client.images.get(reference).id))
        except docker.errors.ImageNotFound:
            raise EnvironmentFailure(
                "install",
                f"runtime image {reference} is missing; build it with "
                "scripts/ensure-runtime-image.sh"
                + ("" if reference == self.images.default.image else " or pull it"),
            ) from None
        except docker.errors.DockerException as exc:
            raise EnvironmentFailure("install", f"the Docker engine failed: {exc}") from None
        if (reference, image_id) not in self._runtimes:
            self._runtimes[reference, image_id] = await anyio.to_thread.run_sync(
                probe_runtime, client, reference, self.settings.root / "runtimes"
            )
        return self._runtimes[reference, image_id]

    def chosen(self, metadata: dict[str, Any]) -> RuntimeImage:
        """The runtime the notebook's metadata chooses (EnvironmentFailure if none of ours)."""
        return self.images.choose(metadata)

    async def clean(self, client: docker.DockerClient, mounted: set[str]) -> list[Removed]:
        """Remove the sets nobody was given for ``keep_days`` that no kernel mounts: neither
        this process's (``mounted``) nor any other container on the engine. One log line per
        set removed."""
        if self.settings.keep_days <= 0:
            return []
        sets = self.store.root / "sets"
        in_use = mounted | await anyio.to_thread.run_sync(mounted_sets, client, sets)
        removed = await anyio.to_thread.run_sync(
            self.store.clean, self.settings.keep_days * 86400, in_use
        )
        for item in removed:
            log.info(
                "environment set removed",
                extra={
                    "key": item.key,
                    "bytes": item.bytes,
                    "last_used": datetime.fromtimestamp(item.last_used, UTC).isoformat(),
                    "keep_days": self.settings.keep_days,
                },
            )
        return removed

    async def prepare(
        self, notebook: NotebookPeer, client: docker.DockerClient, *, update: bool = False
    ) -> Prepared:
        """The environment for the notebook's dependencies as they are now: the recorded set
        when the record is for this request (unless ``update``), else a new resolution.
        Raises EnvironmentFailure (also shown in the kernel status)."""
        lock = self._notebooks.setdefault(notebook.notebook_id, anyio.Lock())
        async with lock:
            metadata = notebook.metadata()
            dependencies = metadata.get("dependencies")
            extra = {"notebook_id": str(notebook.notebook_id)}
            status: _Status | None = None
            try:
                image = self.chosen(metadata).image
                request = canonical(parse_requirements(dependencies))
                if not request:
                    if metadata.get("environment") is not None:
                        notebook.set_metadata("environment", None)
                    return Prepared(None, None, image=image)
                runtime = await self.runtime(client, image)
                recorded = (
                    None
                    if update
                    else recorded_packages(metadata.get("environment"), request, runtime)
                )
                status = _Status(notebook, request)
                if recorded is not None:
                    packages = recorded
                    key, path = await self._install(to_install(packages, runtime), runtime, status)
                else:
                    packages = await self._resolve(request, runtime, status, update, extra)
                    key, path = await self._install(to_install(packages, runtime), runtime, status)
                record = make_record(request, packages, runtime, key)
                if not same_record(metadata.get("environment"), record):
                    notebook.set_metadata("environment", record)
                return Prepared(key, path, tuple(packages), image=image)
            except EnvironmentFailure as failure:
                log.warning(
                    "environment failed: %s",
                    failure.message,
                    extra={**extra, "kind": failure.kind, "requirement": failure.requirement},
                )
                (status or _Status(notebook, [])).failed(failure)
                raise

    async def _resolve(
        self,
        request: list[str],
        runtime: Runtime,
        status: _Status,
        update: bool,
        extra: dict[str, str],
    ) -> list[Package]:
        cache_key = (tuple(request), runtime.image_id)
        cached = self._resolved.get(cache_key)
        now = time.monotonic()
        if cached is not None and not update and now - cached[0] < self.settings.resolution_ttl_s:
            return cached[1]
        status.progress("resolving", None, 0, len(request))
        status.write()
        packages = await resolve(
            parse_requirements(request),
            runtime,
            index_url=self.settings.index_url,
            cache_dir=self.store.pip_cache,
            limit_s=self.settings.timeout_s,
            on_line=status.resolving,
        )
        log.info(
            "environment resolved",
            extra={
                **extra,
                "packages": len(packages),
                "duration_ms": round((time.monotonic() - now) * 1000),
            },
        )
        self._resolved[cache_key] = (time.monotonic(), packages)
        return packages

    async def _install(
        self, packages: list[Package], runtime: Runtime, status: _Status
    ) -> tuple[str | None, Path | None]:
        if not packages:
            return None, None
        key, path = await self.store.install(
            packages,
            runtime,
            index_url=self.settings.index_url,
            progress=status.progress,
            log=status.line,
        )
        return key, path


def mounted_sets(client: docker.DockerClient, sets: Path) -> set[str]:
    """The keys of the sets under ``sets`` that any container on the engine mounts (kernels
    of other servers sharing the store included); blocking."""
    keys = set()
    for container in client.containers.list(all=True, filters={"label": "weft.kernel=1"}):
        for mount in container.attrs.get("Mounts") or []:
            source = Path(str(mount.get("Source") or ""))
            if source.parent == sets:
                keys.add(source.name)
    return keys
