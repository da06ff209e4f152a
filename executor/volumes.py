"""Workspace stores whose size a kernel cannot exceed: one ext4 image per workspace,
loop-mounted at the workspace's folder.

A plain folder lets a cell write until the host's disk is full, whatever the quota says
(the server can only check uploads). An ext4 filesystem the size of the quota refuses the
write itself: the cell gets ``ENOSPC``, the host's disk holds at most the quota per
workspace (the image is sparse: it takes only what is written), and the usage shown is the
filesystem's, which cannot pass its size.

The image lives at ``$WEFT_FILES_DIR/.volumes/<workspace>.ext4`` and is mounted (nosuid,
nodev) at ``$WEFT_FILES_DIR/<workspace>`` the first time anything needs the workspace: an
upload, a listing, a kernel start. Mounting needs root (the server runs as root beside its
Docker engine); where this process cannot mount, ``WEFT_FILES_VOLUMES=auto`` falls back to
plain folders with a warning. Every step is idempotent: a mounted workspace is left as it
is, an image already attached to a loop device (a kernel of another process still holds
it) is mounted from that device, never attached twice, and a plain folder with files from
before is moved into its new image.

>>> volumes = WorkspaceVolumes(root, quota_bytes=10**9, owner_uid=1000)
>>> volumes.ensure(root / str(workspace_id))
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

MIN_IMAGE_BYTES = 1024 * 1024  # ext4 needs some room; smaller quotas get this much
_TOOLS = ("mkfs.ext4", "mount", "umount", "losetup")


class VolumeError(Exception):
    """A workspace store could not be set up; the message says why."""


def loop_mounts_possible() -> str | None:
    """None if this process can make and mount workspace images, else why not."""
    if os.geteuid() != 0:
        return "the server does not run as root, so it cannot mount workspace images"
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found (Debian: apt-get install e2fsprogs mount)"
    if not Path("/dev/loop-control").exists():
        return "no loop devices on this machine (/dev/loop-control is missing)"
    return None


def _run(*args: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VolumeError(f"{args[0]} failed: {exc}") from None
    if done.returncode != 0:
        raise VolumeError(f"{' '.join(args[:2])} failed: {done.stderr.strip()[:500]}")
    return done.stdout


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below ``root``, deepest first (from /proc/self/mountinfo)."""
    prefix = str(root.resolve())
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as info:
        for line in info:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


class WorkspaceVolumes:
    def __init__(self, root: Path, quota_bytes: int, owner_uid: int | None) -> None:
        self.root = root
        self.images = root / ".volumes"
        self.size = max(quota_bytes, MIN_IMAGE_BYTES)
        self.owner_uid = owner_uid
        self._lock = threading.Lock()
        self._mounted: set[Path] = set()

    def image_of(self, folder: Path) -> Path:
        return self.images / f"{folder.name}.ext4"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One mounter at a time, in this process and across processes on this host."""
        self.images.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.images / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def ensure(self, folder: Path) -> None:
        """``folder`` is the workspace's filesystem, mounted (made on first use)."""
        if folder.is_mount():
            return
        with self._locked():
            if folder.is_mount():
                return
            image = self.image_of(folder)
            fresh = not image.exists()
            if fresh:
                self._make(image)
            folder.mkdir(parents=True, exist_ok=True)
            leftovers = any(folder.iterdir())
            staging = None
            if leftovers:  # files from before workspaces had their own filesystem
                staging = self.images / f"{folder.name}.moving"
                folder.rename(staging)
                folder.mkdir()
            self._mount(image, folder)
            self._mounted.add(folder)
            if fresh:
                with contextlib.suppress(OSError):
                    (folder / "lost+found").rmdir()
            if staging is not None:
                self._move_in(staging, folder)
            log.info("workspace store mounted", extra={"workspace_id": folder.name})

    def _make(self, image: Path) -> None:
        partial = image.with_suffix(".partial")
        with open(partial, "wb") as out:
            out.truncate(self.size)  # sparse: the host's disk holds only what is written
        owner = self.owner_uid if self.owner_uid is not None else os.geteuid()
        _run(
            "mkfs.ext4",
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            f"root_owner={owner}:{owner},lazy_itable_init=1,lazy_journal_init=1",
            str(partial),
        )
        partial.rename(image)

    def _mount(self, image: Path, folder: Path) -> None:
        attached = _run("losetup", "-j", str(image)).strip()
        options = "nosuid,nodev,noatime"
        if attached:  # still held by a kernel: mount the same device, never attach twice
            device = attached.split(":", 1)[0]
            _run("mount", "-o", options, device, str(folder))
        else:
            _run("mount", "-o", f"loop,{options}", str(image), str(folder))

    def _move_in(self, staging: Path, folder: Path) -> None:
        try:
            _run("cp", "-a", f"{staging}/.", str(folder))
        except VolumeError as exc:
            log.error(
                "workspace files could not all move into the workspace's store (over its "
                "quota?); they are kept in %s: %s",
                staging,
                exc,
                extra={"workspace_id": folder.name},
            )
            return
        shutil.rmtree(staging, ignore_errors=True)

    def unmount_all(self) -> None:
        """Unmount what this process mounted (at shutdown); the images stay."""
        with self._lock:
            for folder in sorted(self._mounted):
                unmount(folder)
            self._mounted.clear()


def unmount(folder: Path) -> None:
    try:
        _run("umount", str(folder))
    except VolumeError:
        # Busy (a download still open): detach now, the kernel frees it when done.
        with contextlib.suppress(VolumeError):
            _run("umount", "-l", str(folder))
