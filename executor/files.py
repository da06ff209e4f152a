"""The per-workspace file store: one directory per workspace, mounted into that workspace's
kernels at /workspace. Every path is resolved inside the workspace's root, or refused.

Cells write into the same directories while the server reads and writes them, and a cell
can replace any folder with a symbolic link at any moment. So the server never checks a
path and then opens it again by name (the link could be swapped in between, and the
server, often root, would follow it out of the workspace): every operation walks from the
workspace root one component at a time with ``O_NOFOLLOW`` and acts on what it opened
(``dir_fd``). Links are listed as links and never followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import anyio

from executor.volumes import WorkspaceVolumes

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024
_UPLOAD_PREFIX = ".weft-upload-"
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
# O_NONBLOCK: opening a FIFO a cell made must not hang the server (regular files ignore it).
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
_GONE = "a folder on the way was removed or moved meanwhile; try again"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC


class FileStoreError(Exception):
    """A request the file store refuses; ``status`` is the HTTP status that fits."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def path_parts(relative: str) -> list[str]:
    """The names along ``relative`` (a path inside a workspace), after every check."""
    if "\x00" in relative:
        raise FileStoreError("path contains a NUL byte")
    if len(relative.encode()) > MAX_PATH_BYTES:
        raise FileStoreError(f"path longer than {MAX_PATH_BYTES} bytes")
    if relative.startswith("/") or relative.startswith("\\"):
        raise FileStoreError("absolute paths are not allowed; paths are relative to the workspace")
    parts = [p for p in relative.replace("\\", "/").split("/") if p not in ("", ".")]
    for part in parts:
        if part == "..":
            raise FileStoreError("'..' is not allowed in paths")
        if len(part.encode()) > MAX_NAME_BYTES:
            raise FileStoreError(f"a file name is longer than {MAX_NAME_BYTES} bytes")
        if any(ord(c) < 32 or c == "\x7f" for c in part):
            raise FileStoreError("file names may not contain control characters")
        if part.startswith(_UPLOAD_PREFIX):
            raise FileStoreError("that name is reserved")
    return parts


def _lstat_at(folder: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _not_followed(folder: int, name: str, shown: str, exc: OSError) -> FileStoreError:
    """What to say when opening ``name`` without following links failed with ``exc``."""
    info = _lstat_at(folder, name)
    if info is not None and stat.S_ISLNK(info.st_mode):
        return FileStoreError(
            f"'{shown}' is a link: links are not followed (they could lead outside the workspace)",
            status=403,
        )
    if exc.errno == errno.ENOTDIR:
        return FileStoreError(f"'{shown}' is a file, not a folder")
    return FileStoreError(f"cannot open '{shown}': {exc.strerror}")


@dataclass(frozen=True)
class FileStore:
    """
    >>> store = FileStore(root=Path(".state/files"), quota_bytes=10**9, upload_limit_bytes=10**8)
    >>> await store.write(workspace_id, "data/sales.csv", chunks)
    """

    root: Path
    quota_bytes: int
    upload_limit_bytes: int
    owner_uid: int | None = None
    # A filesystem of the quota's size per workspace (executor.volumes), or plain folders.
    volumes: WorkspaceVolumes | None = None

    def workspace_root(self, workspace_id: uuid.UUID) -> Path:
        """The workspace's folder, made (and its filesystem mounted) on first use; this may
        block for a moment the first time, so call it off the event loop."""
        path = self.root / str(workspace_id)
        if self.volumes is not None:
            self.volumes.ensure(path)
        elif not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            self._own(path)
        return path

    def _own(self, name: str | Path, folder: int | None = None) -> None:
        # Kernels run as an unprivileged uid: they must be able to write what we create.
        if self.owner_uid is not None and os.geteuid() == 0:
            os.chown(name, self.owner_uid, self.owner_uid, dir_fd=folder, follow_symlinks=False)

    @contextlib.contextmanager
    def _folder(self, workspace_id: uuid.UUID, parts: Sequence[str]) -> Iterator[int]:
        """The folder at ``parts``, opened from the workspace root one name at a time
        without following links; closed on exit."""
        fd = os.open(self.workspace_root(workspace_id), _FOLDER)
        try:
            for depth, part in enumerate(parts):
                shown = "/".join(parts[: depth + 1])
                try:
                    child = os.open(part, _FOLDER, dir_fd=fd)
                except FileNotFoundError:
                    raise FileStoreError(
                        f"no such folder: {shown} (create it first)", status=404
                    ) from None
                except OSError as exc:
                    raise _not_followed(fd, part, shown, exc) from None
                os.close(fd)
                fd = child
            try:
                yield fd
            except FileNotFoundError:
                # What we opened was removed meanwhile (a cell, or another request).
                raise FileStoreError(_GONE, status=409) from None
        finally:
            os.close(fd)

    @staticmethod
    def _leaf(relative: str, what: str) -> tuple[list[str], str]:
        parts = path_parts(relative)
        if not parts:
            raise FileStoreError(f"the workspace root cannot be {what}")
        return parts, parts[-1]

    def usage(self, workspace_id: uuid.UUID) -> int:
        root = self.workspace_root(workspace_id)
        if self.volumes is not None:
            # The filesystem's own count: it cannot pass its size (sparse files included).
            fs = os.statvfs(root)
            return (fs.f_blocks - fs.f_bfree) * fs.f_frsize
        total = 0
        walk = os.fwalk(root, follow_symlinks=False)
        for _path, _dirs, files, folder in walk:
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.stat(name, dir_fd=folder, follow_symlinks=False).st_size
        return total

    def list(
        self, workspace_id: uuid.UUID, relative: str = "", schema: bool = False
    ) -> list[dict[str, Any]]:
        parts = path_parts(relative)
        entries = []
        with self._folder(workspace_id, parts) as folder, os.scandir(folder) as found:
            for entry in sorted(found, key=lambda e: e.name):
                if entry.name.startswith(_UPLOAD_PREFIX):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted by a cell while we looked
                kind = (
                    "dir"
                    if stat.S_ISDIR(info.st_mode)
                    else "link"
                    if stat.S_ISLNK(info.st_mode)
                    else "file"
                )
                item: dict[str, Any] = {
                    "name": entry.name,
                    "path": "/".join([*parts, entry.name]),
                    "type": kind,
                    "size": info.st_size if kind == "file" else None,
                    "modified": datetime.fromtimestamp(info.st_mtime, UTC).isoformat(),
                }
                if schema and kind == "file":
                    table = _schema_at(folder, entry.name)
                    if table is not None:
                        item["schema"] = table
                entries.append(item)
        return entries

    def open_for_read(self, workspace_id: uuid.UUID, relative: str) -> tuple[BinaryIO, int]:
        """A regular file, open for reading, and its size (the caller closes it)."""
        parts = path_parts(relative)
        if not parts:
            raise FileStoreError("that is a folder; list it with GET /api/workspaces/{id}/files")
        with self._folder(workspace_id, parts[:-1]) as folder:
            try:
                fd = os.open(parts[-1], _READ, dir_fd=folder)
            except FileNotFoundError:
                raise FileStoreError(f"no such file: {'/'.join(parts)}", status=404) from None
            except OSError as exc:
                raise _not_followed(folder, parts[-1], "/".join(parts), exc) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            if stat.S_ISDIR(info.st_mode):
                raise FileStoreError(
                    "that is a folder; list it with GET /api/workspaces/{id}/files?path="
                )
            raise FileStoreError("not a regular file (a pipe, socket or device)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), info.st_size

    async def write(
        self,
        workspace_id: uuid.UUID,
        relative: str,
        chunks: AsyncIterator[bytes],
        declared_size: int | None = None,
    ) -> dict[str, Any]:
        """Stream an upload to a temporary file beside the target, then rename it into place:
        a refused or broken upload leaves nothing behind."""
        parts, name = self._leaf(relative, "written")
        await anyio.to_thread.run_sync(self.workspace_root, workspace_id)
        with self._folder(workspace_id, parts[:-1]) as folder:
            existing = _lstat_at(folder, name)
            if existing is not None and stat.S_ISDIR(existing.st_mode):
                raise FileStoreError("a folder has that name", status=409)
            replaced = existing.st_size if existing and stat.S_ISREG(existing.st_mode) else 0
            used = await anyio.to_thread.run_sync(self.usage, workspace_id)
            room = self.quota_bytes - (used - replaced)
            limit = min(self.upload_limit_bytes, room)
            if declared_size is not None and declared_size > limit:
                raise self._too_large(limit, room)
            temp = f"{_UPLOAD_PREFIX}{uuid.uuid4().hex}"
            size = 0
            try:
                fd = os.open(temp, _CREATE, 0o644, dir_fd=folder)
                try:
                    async with anyio.wrap_file(os.fdopen(fd, "wb")) as out:
                        async for chunk in chunks:
                            size += len(chunk)
                            if size > limit:
                                raise self._too_large(limit, room)
                            await out.write(chunk)
                except OSError as exc:
                    # The workspace's filesystem is full (executor.volumes): the quota holds.
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise self._too_large(room, room) from None
                    raise
                # rename() replaces a link itself, never what it points to.
                os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp, dir_fd=folder)
            self._own(name, folder)
        return {"path": "/".join(parts), "size": size}

    def _too_large(self, limit: int, room: int) -> FileStoreError:
        if limit == room:
            return FileStoreError(
                f"workspace quota exceeded: {max(room, 0)} bytes left of {self.quota_bytes}; "
                "delete files or ask for a larger quota (WEFT_FILES_QUOTA_BYTES)",
                status=413,
            )
        return FileStoreError(f"upload larger than the {limit}-byte limit", status=413)

    def delete(self, workspace_id: uuid.UUID, relative: str) -> None:
        parts, name = self._leaf(relative, "deleted")
        with self._folder(workspace_id, parts[:-1]) as folder:
            info = _lstat_at(folder, name)
            if info is None:
                raise FileStoreError(f"no such file or folder: {'/'.join(parts)}", status=404)
            if stat.S_ISDIR(info.st_mode):
                # The fd-based rmtree: it never follows a link, even one swapped in meanwhile.
                shutil.rmtree(name, dir_fd=folder)
            else:
                os.unlink(name, dir_fd=folder)

    def mkdir(self, workspace_id: uuid.UUID, relative: str) -> None:
        """Create the folder and any missing folders above it."""
        parts, _ = self._leaf(relative, "created")
        folder = os.open(self.workspace_root(workspace_id), _FOLDER)
        try:
            for depth, part in enumerate(parts):
                last = depth == len(parts) - 1
                try:
                    os.mkdir(part, dir_fd=folder)
                    self._own(part, folder)
                except FileNotFoundError:
                    raise FileStoreError(_GONE, status=409) from None
                except FileExistsError:
                    if last:
                        raise FileStoreError(
                            "a file or folder with that name exists", status=409
                        ) from None
                if not last:
                    shown = "/".join(parts[: depth + 1])
                    try:
                        child = os.open(part, _FOLDER, dir_fd=folder)
                    except OSError as exc:
                        raise _not_followed(folder, part, shown, exc) from None
                    os.close(folder)
                    folder = child
        finally:
            os.close(folder)

    def move(self, workspace_id: uuid.UUID, source: str, destination: str) -> None:
        src, src_name = self._leaf(source, "moved")
        dst, dst_name = self._leaf(destination, "replaced")
        with (
            self._folder(workspace_id, src[:-1]) as src_folder,
            self._folder(workspace_id, dst[:-1]) as dst_folder,
        ):
            if _lstat_at(src_folder, src_name) is None:
                raise FileStoreError(f"no such file or folder: {'/'.join(src)}", status=404)
            if _lstat_at(dst_folder, dst_name) is not None:
                raise FileStoreError("the destination exists", status=409)
            try:
                os.rename(src_name, dst_name, src_dir_fd=src_folder, dst_dir_fd=dst_folder)
            except OSError as exc:
                if exc.errno == errno.EINVAL:
                    raise FileStoreError("a folder cannot be moved into itself") from None
                raise FileStoreError(f"cannot move: {exc.strerror}", status=409) from None

    def copy_workspace(self, source: uuid.UUID, destination: uuid.UUID) -> None:
        """Copy every file of one workspace into another (used when a workspace is copied).

        The source is read without following links (its kernels may be running); links are
        copied as links, pipes and devices skipped. The destination is new: no kernel of
        its own can have touched it yet."""
        src_root = self.workspace_root(source)
        dst_root = self.workspace_root(destination)
        for path, _dirs, files, folder in os.fwalk(src_root, follow_symlinks=False):
            relative = os.path.relpath(path, src_root)
            target = dst_root if relative == "." else dst_root / relative
            if not target.is_dir():
                target.mkdir()
                self._own(target)
            for name in files:
                if name.startswith(_UPLOAD_PREFIX):
                    continue
                info = _lstat_at(folder, name)
                if info is None:
                    continue
                if stat.S_ISLNK(info.st_mode):
                    os.symlink(os.readlink(name, dir_fd=folder), target / name)
                elif stat.S_ISREG(info.st_mode):
                    with contextlib.suppress(FileNotFoundError, OSError):
                        fd = os.open(name, _READ, dir_fd=folder)
                        os.set_blocking(fd, True)
                        with os.fdopen(fd, "rb") as data, (target / name).open("wb") as out:
                            shutil.copyfileobj(data, out)
                        self._own(target / name)


def _schema_at(folder: int, name: str) -> dict[str, Any] | None:
    """``table_schema`` of a file in ``folder``, opened without following a link."""
    if Path(name).suffix.lower() not in (".csv", ".parquet", ".pq"):
        return None
    try:
        fd = os.open(name, _READ, dir_fd=folder)
    except OSError:
        return None  # replaced by a link or removed since it was listed
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return None
        os.set_blocking(fd, True)
        return table_schema(name, file)


def table_schema(name: str, file: BinaryIO) -> dict[str, Any] | None:
    """Columns and types of a CSV or Parquet file, by its name's suffix (None for other
    files; an error entry for unreadable ones)."""
    suffix = Path(name).suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        return None
    try:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq
    except ImportError:
        return None
    try:
        if suffix == ".csv":
            with pacsv.open_csv(file) as reader:
                arrow_schema = reader.schema
            return {"format": "csv", "columns": _columns(arrow_schema)}
        metadata = pq.read_metadata(file)
        return {
            "format": "parquet",
            "columns": _columns(metadata.schema.to_arrow_schema()),
            "rows": metadata.num_rows,
        }
    except (OSError, ValueError) as exc:
        return {"error": f"could not read the schema: {exc}"}


def _columns(arrow_schema: Any) -> list[dict[str, str]]:
    return [{"name": field.name, "dtype": str(field.type)} for field in arrow_schema]
