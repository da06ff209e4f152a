"""Where environments live on the server: wheels by their sha256, and one read-only
directory per environment, named by a hash of exactly what it holds and what it is for.

```
$WEFT_ENV_DIR/wheels/<sha256>/<file>.whl   every wheel ever downloaded, checked by hash
$WEFT_ENV_DIR/sets/<key>/                  one installed set, read-only, mounted by kernels
$WEFT_ENV_DIR/sets/<key>.json              what it holds (for people and for the benchmark)
$WEFT_ENV_DIR/sets/<key>.used              touched whenever a kernel is given the set
```

The key covers the runtime (image id, Python version, platform) and the sorted (name,
version, sha256) of every package installed into the directory, so the same set for the
same runtime is the same directory, shared by every notebook that needs it, and a
directory never changes once made: it is built beside its final name and renamed into
place complete (two servers building the same set at once: one rename wins, the other
directory is removed).

Old sets are removed by ``EnvironmentStore.clean`` (``WEFT_ENV_KEEP_DAYS``): a set no notebook
was given for that long and that no running kernel mounts. Taking a set for a kernel (the
``has`` check and the touch of ``<key>.used``) and removing one (the age check and the
rename out of ``sets/<key>``) each hold ``sets/.lock`` (flock, so other processes sharing
the store too), so a set is never removed between being chosen and being used, and a
prepare racing a removal builds it again.

Installing is pip's wheel installer (``pip install --no-deps --no-index --target``) from
files whose hashes were checked: it unpacks archives and writes files, it runs nothing
from them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from executor.environments.errors import EnvironmentFailure
from executor.environments.resolver import Package, run_pip
from executor.environments.runtime import Runtime

log = logging.getLogger(__name__)

Progress = Callable[[str, str | None, int, int], None]  # step, package, done, total

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_KEY = re.compile(r"^[0-9a-f]{32}$")
# A set given to a kernel this recently is always kept (between being chosen and its
# container mounting it, nothing else says it is in use), whatever WEFT_ENV_KEEP_DAYS says.
MIN_KEEP_S = 3600.0
# Leftovers of a build or a removal that a crash interrupted are removed after this long.
_LEFTOVER_S = 24 * 3600.0


@dataclass(frozen=True)
class Removed:
    """One set ``clean`` removed: its key, size, and when a kernel was last given it."""

    key: str
    bytes: int
    last_used: float


def environment_key(packages: list[Package], runtime: Runtime) -> str:
    identity = {
        "runtime": [runtime.image_id, runtime.python_version, runtime.platforms[0]],
        "packages": sorted([p.name, p.version, p.sha256] for p in packages),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


class EnvironmentStore:
    """
    >>> store = EnvironmentStore(Path("/var/lib/weft/environments"))
    >>> path = await store.install(packages, runtime, index_url=..., progress=...)
    """

    def __init__(self, root: Path, *, timeout: float = 600.0) -> None:
        self.root = root
        self.timeout = timeout
        self._locks: dict[str, anyio.Lock] = {}

    @property
    def pip_cache(self) -> Path:
        return self.root / "pip-cache"

    def set_path(self, key: str) -> Path:
        return self.root / "sets" / key

    def has(self, key: str) -> bool:
        return (self.root / "sets" / f"{key}.json").exists() and self.set_path(key).is_dir()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The store's lock (blocking: hold it for a few file operations only)."""
        sets = self.root / "sets"
        sets.mkdir(parents=True, exist_ok=True)
        with open(sets / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _take(self, key: str) -> bool:
        """Whether the set exists; if it does, it is marked used now (under the lock)."""
        with self._locked():
            if not self.has(key):
                return False
            self._touch(key)
            return True

    def _touch(self, key: str) -> None:
        (self.root / "sets" / f"{key}.used").touch()

    def last_used(self, key: str) -> float:
        """When a kernel was last given the set (or, never: when it was made)."""
        sets = self.root / "sets"
        times = []
        for name in (f"{key}.used", f"{key}.json", key):
            with contextlib.suppress(OSError):
                times.append(os.lstat(sets / name).st_mtime)
        return max(times, default=0.0)

    def clean(self, keep_s: float, in_use: set[str], now: float | None = None) -> list[Removed]:
        """Remove every set not given to a kernel for ``keep_s`` seconds (at least
        MIN_KEEP_S) whose key is not in ``in_use`` (the sets running kernels mount), and
        leftovers of interrupted builds. Blocking: call it in a worker thread. Only real
        directories named like a key are removed, and nothing is followed out of the store
        (a symlink is removed as a link, never its target)."""
        sets = self.root / "sets"
        if not sets.is_dir():
            return []
        now = time.time() if now is None else now
        keep_s = max(keep_s, MIN_KEEP_S)
        removed = []
        for entry in sorted(os.listdir(sets)):
            path = sets / entry
            if entry.startswith((".building-", ".removing-")):
                with contextlib.suppress(OSError):
                    if now - os.lstat(path).st_mtime > _LEFTOVER_S:
                        _remove_tree(path)
                continue
            if not _KEY.match(entry) or entry in in_use:
                continue
            trash = sets / f".removing-{entry}-{uuid.uuid4().hex[:8]}"
            with self._locked():
                try:
                    mode = os.lstat(path).st_mode
                except FileNotFoundError:
                    continue
                if not stat.S_ISDIR(mode):  # not a set this store made: left alone
                    continue
                last = self.last_used(entry)
                if now - last < keep_s:
                    continue
                manifest = sets / f"{entry}.json"
                size = _manifest_bytes(manifest)
                os.rename(path, trash)  # from here on no one is given it: has() is false
                for name in (f"{entry}.json", f"{entry}.used"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(sets / name)
            _remove_tree(trash)
            removed.append(Removed(entry, size, last))
        return removed

    def _wheel(self, package: Package) -> Path | None:
        folder = self.root / "wheels" / package.sha256
        found = sorted(folder.glob("*.whl")) if folder.is_dir() else []
        return found[0] if found else None

    async def install(
        self,
        packages: list[Package],
        runtime: Runtime,
        *,
        index_url: str,
        progress: Progress,
        log: Callable[[str], None],
    ) -> tuple[str, Path]:
        """The directory holding exactly ``packages`` for ``runtime``, made if missing."""
        for package in packages:
            if not _SHA256.match(package.sha256):
                raise EnvironmentFailure(
                    "install", f"{package.name}: the recorded hash is not a sha256", package.name
                )
        key = environment_key(packages, runtime)
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            if await anyio.to_thread.run_sync(self._take, key):
                return key, self.set_path(key)
            await self._download(packages, runtime, index_url, progress, log)
            progress("installing", None, len(packages), len(packages))
            path = await self._build(key, packages, runtime, log)
        return key, path

    async def _download(
        self,
        packages: list[Package],
        runtime: Runtime,
        index_url: str,
        progress: Progress,
        log: Callable[[str], None],
    ) -> None:
        """Every wheel of the set into wheels/<sha256>/, each checked against its hash."""
        missing = [p for p in packages if self._wheel(p) is None]
        total = len(packages)
        done = [total - len(missing)]
        if not missing:
            return
        (self.root / "wheels").mkdir(parents=True, exist_ok=True)
        progress("downloading", f"{missing[0].name} {missing[0].version}", done[0], total)

        def follow(line: str) -> None:  # pip says "Collecting NAME==VERSION" for each
            log(line)
            match = re.match(r"\s*Collecting (\S+)==(\S+)", line)
            if match:
                progress("downloading", f"{match[1]} {match[2]}", done[0], total)
            elif re.match(r"\s*(Saved|File was already downloaded) ", line):
                done[0] = min(done[0] + 1, total)

        incoming = self.root / "wheels" / f".incoming-{uuid.uuid4().hex}"
        incoming.mkdir()
        output, code = "", 0
        try:
            for package in [p for p in missing if p.url]:  # one pip process fewer
                progress("downloading", f"{package.name} {package.version}", done[0], total)
                await _fetch(package, incoming, log)
                done[0] += 1
            by_pip = [p for p in missing if not p.url]
            if by_pip:
                (incoming / "pins.txt").write_text("".join(p.pin() + "\n" for p in by_pip))
                code, output = await self._pip_download(runtime, index_url, incoming, follow)
            by_hash = {p.sha256: p for p in missing}
            for wheel in incoming.glob("*.whl"):
                # pip checked every hash; the second look tells which file is which.
                digest = await anyio.to_thread.run_sync(_sha256, wheel)
                if digest in by_hash:
                    final = self.root / "wheels" / digest
                    final.mkdir(exist_ok=True)  # another server may have stored it: same bytes
                    os.replace(wheel, final / wheel.name)
            for package in missing:
                if self._wheel(package) is None:
                    raise _download_failure(package, output if code != 0 else "")
        finally:
            await anyio.to_thread.run_sync(shutil.rmtree, incoming, True)
        progress("downloading", None, total, total)

    async def _pip_download(
        self, runtime: Runtime, index_url: str, incoming: Path, follow: Callable[[str], None]
    ) -> tuple[int, str]:
        return await run_pip(
            [
                "download",
                "--no-deps",
                "--require-hashes",
                "--progress-bar",
                "off",
                "--index-url",
                index_url,
                "--cache-dir",
                str(self.pip_cache),
                "--dest",
                str(incoming),
                *runtime.pip_target(),
                "-r",
                str(incoming / "pins.txt"),
            ],
            cwd=incoming,
            limit_s=self.timeout,
            on_line=follow,
        )

    async def _build(
        self, key: str, packages: list[Package], runtime: Runtime, log: Callable[[str], None]
    ) -> Path:
        sets = self.root / "sets"
        sets.mkdir(parents=True, exist_ok=True)
        building = sets / f".building-{key}-{uuid.uuid4().hex[:8]}"
        wheels = [str(w) for p in packages if (w := self._wheel(p)) is not None]
        try:
            code, output = await run_pip(
                [
                    "install",
                    "--no-deps",
                    "--no-index",
                    "--no-warn-script-location",
                    "--target",
                    str(building),
                    *runtime.pip_target(),
                    *wheels,
                ],
                cwd=sets,
                limit_s=self.timeout,
                on_line=log,
            )
            if code != 0:
                tail = output.strip().splitlines()[-1:] or ["no output"]
                raise EnvironmentFailure("install", f"installing the wheels failed: {tail[0]}")
            await anyio.to_thread.run_sync(_make_read_only, building)
            manifest = {
                "key": key,
                "runtime": runtime.describe(),
                "packages": [[p.name, p.version, p.sha256] for p in packages],
                "bytes": await anyio.to_thread.run_sync(_size, building),
            }
            await anyio.to_thread.run_sync(self._place, key, building, manifest)
            return self.set_path(key)
        finally:
            if building.exists():
                await anyio.to_thread.run_sync(_remove_tree, building)

    def _place(self, key: str, building: Path, manifest: dict[str, object]) -> None:
        """The built set renamed into place, with its manifest, marked used (under the lock:
        a removal never sees it half placed)."""
        sets = self.root / "sets"
        final = self.set_path(key)
        written = sets / f".{key}.json.{uuid.uuid4().hex[:8]}"
        written.write_text(json.dumps(manifest, indent=1))
        with self._locked():
            try:
                building.rename(final)
            except OSError:
                if not final.is_dir():
                    written.unlink()
                    raise
            written.replace(sets / f"{key}.json")
            self._touch(key)


def _manifest_bytes(manifest: Path) -> int:
    try:
        value = json.loads(manifest.read_text()).get("bytes")
    except (OSError, ValueError, AttributeError):
        return 0
    return value if isinstance(value, int) else 0


_MAX_WHEEL_BYTES = 2 * 1024**3


async def _fetch(package: Package, folder: Path, log: Callable[[str], None]) -> None:
    """The wheel at the URL pip's resolution reported, into ``folder`` under its own file name
    if that is a wheel's name; a wrong hash or size leaves nothing (the check above fails)."""
    assert package.url is not None
    name = package.url.split("#")[0].split("?")[0].rsplit("/", 1)[-1]
    try:
        parse_wheel_filename(name)
    except InvalidWheelFilename:
        raise EnvironmentFailure(
            "index", f"{package.name}: the index's file {name[:80]!r} is not a wheel"
        ) from None
    target = folder / name
    digest = hashlib.sha256()
    size = 0
    log(f"Downloading {name}")
    try:
        async with (
            httpx.AsyncClient(timeout=60, follow_redirects=False) as client,
            client.stream("GET", package.url) as response,
        ):
            if response.status_code != 200:
                raise _download_failure(package, f"the index answered {response.status_code}")
            with target.open("wb") as handle:
                async for chunk in response.aiter_bytes(1 << 20):
                    size += len(chunk)
                    if size > _MAX_WHEEL_BYTES:
                        raise _download_failure(package, "the file is larger than 2 GiB")
                    digest.update(chunk)
                    handle.write(chunk)
    except httpx.HTTPError as exc:
        raise _download_failure(package, f"the download failed ({exc})") from None
    if digest.hexdigest() != package.sha256:
        target.unlink()
        raise _download_failure(package, "the file's hash differs")
    log(f"Saved {name} ({size} bytes, sha256 checked)")


def _download_failure(package: Package, output: str) -> EnvironmentFailure:
    if "THESE PACKAGES DO NOT MATCH THE HASHES" in output or "hash differs" in output:
        why = "the index now serves a different file for it (its hash changed)"
    elif "No matching distribution" in output:
        why = "the index no longer has a wheel of it for this runtime"
    else:
        errors = [line for line in output.splitlines() if line.startswith("ERROR")]
        why = errors[-1] if errors else "the download failed"
    return EnvironmentFailure(
        "install",
        f"{package.name}=={package.version} as recorded cannot be installed: {why}; "
        "update the environment (Configuration panel, Update) to resolve it again",
        f"{package.name}=={package.version}",
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _make_read_only(root: Path) -> None:
    """Files 0444 (0555 if executable), folders 0555: nobody writes here after it is made."""
    for folder, dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                continue
            os.chmod(path, 0o555 if mode & stat.S_IXUSR else 0o444)
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o555)
    os.chmod(root, 0o555)


def _remove_tree(root: Path) -> None:
    """Remove a (read-only) tree without following a symlink anywhere: os.walk does not
    descend into linked folders, a link is never chmod-ed (that would change its target),
    and shutil.rmtree removes links as links (a link as ``root`` is just unlinked)."""
    if os.path.islink(root):
        os.unlink(root)
        return
    for folder, dirs, _files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in dirs:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755)
    shutil.rmtree(root, ignore_errors=True)


def _size(root: Path) -> int:
    return sum(
        os.lstat(os.path.join(folder, name)).st_size
        for folder, _dirs, files in os.walk(root)
        for name in files
    )
