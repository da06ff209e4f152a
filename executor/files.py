"""The per-workspace file store: one directory per workspace, mounted into that workspace's
kernels at /workspace. Every path is resolved inside the workspace's root, or refused."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024
_UPLOAD_PREFIX = ".weft-upload-"


class FileStoreError(Exception):
    """A request the file store refuses; ``status`` is the HTTP status that fits."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


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

    def workspace_root(self, workspace_id: uuid.UUID) -> Path:
        path = self.root / str(workspace_id)
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            self._own(path)
        return path

    def _own(self, path: Path) -> None:
        # Kernels run as an unprivileged uid: they must be able to write what we create.
        if self.owner_uid is not None and os.geteuid() == 0:
            os.chown(path, self.owner_uid, self.owner_uid, follow_symlinks=False)

    def resolve(self, workspace_id: uuid.UUID, relative: str, *, must_exist: bool = False) -> Path:
        """The absolute path for ``relative`` inside the workspace, after every check."""
        if "\x00" in relative:
            raise FileStoreError("path contains a NUL byte")
        if len(relative.encode()) > MAX_PATH_BYTES:
            raise FileStoreError(f"path longer than {MAX_PATH_BYTES} bytes")
        if relative.startswith("/") or relative.startswith("\\"):
            raise FileStoreError(
                "absolute paths are not allowed; paths are relative to the workspace"
            )
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
        root = self.workspace_root(workspace_id).resolve()
        candidate = root.joinpath(*parts)
        # Symlinks (a cell can make them) must not lead out: resolve what exists.
        real = candidate.resolve()
        if real != root and root not in real.parents:
            raise FileStoreError("path leads outside the workspace", status=403)
        if must_exist and not candidate.exists():
            raise FileStoreError(f"no such file or folder: {'/'.join(parts) or '/'}", status=404)
        return candidate

    def usage(self, workspace_id: uuid.UUID) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.workspace_root(workspace_id)):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, name)).st_size
        return total

    def list(
        self, workspace_id: uuid.UUID, relative: str = "", schema: bool = False
    ) -> list[dict[str, Any]]:
        folder = self.resolve(workspace_id, relative, must_exist=True)
        if not folder.is_dir():
            raise FileStoreError("not a folder", status=400)
        root = self.workspace_root(workspace_id).resolve()
        entries = []
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            if entry.name.startswith(_UPLOAD_PREFIX):
                continue
            info = entry.lstat()
            kind = (
                "dir"
                if stat.S_ISDIR(info.st_mode)
                else "link"
                if stat.S_ISLNK(info.st_mode)
                else "file"
            )
            item: dict[str, Any] = {
                "name": entry.name,
                "path": str(entry.relative_to(root)),
                "type": kind,
                "size": info.st_size if kind == "file" else None,
                "modified": datetime.fromtimestamp(info.st_mtime, UTC).isoformat(),
            }
            if schema and kind == "file":
                table = table_schema(entry)
                if table is not None:
                    item["schema"] = table
            entries.append(item)
        return entries

    async def write(
        self,
        workspace_id: uuid.UUID,
        relative: str,
        chunks: AsyncIterator[bytes],
        declared_size: int | None = None,
    ) -> dict[str, Any]:
        """Stream an upload to a temporary file beside the target, then rename it into place:
        a refused or broken upload leaves nothing behind."""
        target = self.resolve(workspace_id, relative)
        if target.is_dir():
            raise FileStoreError("a folder has that name", status=409)
        if not target.parent.is_dir():
            raise FileStoreError("the folder does not exist; create it first", status=404)
        existing = target.stat().st_size if target.is_file() else 0
        room = self.quota_bytes - (self.usage(workspace_id) - existing)
        limit = min(self.upload_limit_bytes, room)
        if declared_size is not None and declared_size > limit:
            raise self._too_large(limit, room)
        temp = target.parent / f"{_UPLOAD_PREFIX}{uuid.uuid4().hex}"
        size = 0
        try:
            async with await anyio.open_file(temp, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise self._too_large(limit, room)
                    await out.write(chunk)
            os.replace(temp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        self._own(target)
        return {"path": relative, "size": size}

    def _too_large(self, limit: int, room: int) -> FileStoreError:
        if limit == room:
            return FileStoreError(
                f"workspace quota exceeded: {max(room, 0)} bytes left of {self.quota_bytes}; "
                "delete files or ask for a larger quota (WEFT_FILES_QUOTA_BYTES)",
                status=413,
            )
        return FileStoreError(f"upload larger than the {limit}-byte limit", status=413)

    def delete(self, workspace_id: uuid.UUID, relative: str) -> None:
        target = self.resolve(workspace_id, relative, must_exist=True)
        if target == self.workspace_root(workspace_id).resolve():
            raise FileStoreError("the workspace root cannot be deleted")
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()

    def mkdir(self, workspace_id: uuid.UUID, relative: str) -> None:
        target = self.resolve(workspace_id, relative)
        if target.exists():
            raise FileStoreError("a file or folder with that name exists", status=409)
        target.mkdir(parents=True)
        self._own(target)

    def move(self, workspace_id: uuid.UUID, source: str, destination: str) -> None:
        src = self.resolve(workspace_id, source, must_exist=True)
        dst = self.resolve(workspace_id, destination)
        if dst.exists():
            raise FileStoreError("the destination exists", status=409)
        if not dst.parent.is_dir():
            raise FileStoreError("the destination folder does not exist", status=404)
        src.rename(dst)

    def copy_workspace(self, source: uuid.UUID, destination: uuid.UUID) -> None:
        """Copy every file of one workspace into another (used when a workspace is copied)."""
        src = self.workspace_root(source)
        dst = self.workspace_root(destination)
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)


def table_schema(path: Path) -> dict[str, Any] | None:
    """Columns and types of a CSV or Parquet file (None for other files or unreadable ones)."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        return None
    try:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq
    except ImportError:
        return None
    try:
        if suffix == ".csv":
            with pacsv.open_csv(path) as reader:
                arrow_schema = reader.schema
            return {"format": "csv", "columns": _columns(arrow_schema)}
        metadata = pq.read_metadata(path)
        return {
            "format": "parquet",
            "columns": _columns(metadata.schema.to_arrow_schema()),
            "rows": metadata.num_rows,
        }
    except (OSError, ValueError) as exc:
        return {"error": f"could not read the schema: {exc}"}


def _columns(arrow_schema: Any) -> list[dict[str, str]]:
    return [{"name": field.name, "dtype": str(field.type)} for field in arrow_schema]
