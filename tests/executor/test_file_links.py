"""The file store never follows a link a cell made, even one swapped in while it works.

A cell owns /workspace: it can replace any folder with a symbolic link at any moment. The
server (often root) must not be led outside the workspace by it, neither by a link that is
there when it looks nor by one that appears between a check and a use.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from executor.files import FileStore, FileStoreError

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(root=tmp_path / "files", quota_bytes=10**8, upload_limit_bytes=10**7)


@pytest.fixture
def workspace(store: FileStore) -> uuid.UUID:
    workspace_id = uuid.uuid4()
    store.workspace_root(workspace_id)
    return workspace_id


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside every workspace, as /etc would be."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("OUTSIDE")
    (folder / "victim").mkdir()
    (folder / "victim" / "keep.txt").write_text("keep")
    return folder


def tree(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


@contextlib.contextmanager
def flipping(root: Path, outside: Path) -> Iterator[None]:
    """What a hostile cell does: ``data`` is a real folder one moment, a link out the next."""
    real, parked = root / "data", root / "parked"
    real.mkdir()
    (real / "secret.txt").write_text("inside")
    (real / "victim").mkdir()
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            try:
                os.rename(real, parked)
            except OSError:
                continue  # the store deleted or moved it: wait for it to come back
            with contextlib.suppress(OSError):
                os.symlink(outside, real)
                os.unlink(real)
            try:
                os.rename(parked, real)
            except OSError:
                shutil.rmtree(parked)  # the store made a new "data" meanwhile: keep that

    thread = threading.Thread(target=flip)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


async def test_reads_never_follow_a_link_swapped_in_meanwhile(
    store: FileStore, workspace: uuid.UUID, outside: Path
) -> None:
    read, refused = 0, 0
    with flipping(store.workspace_root(workspace), outside):
        # Until both outcomes happened many times: the race was really run.
        with anyio.fail_after(30):
            while read < 50 or refused < 50:
                try:
                    file, _size = store.open_for_read(workspace, "data/secret.txt")
                except FileStoreError:
                    refused += 1
                else:
                    with file:
                        assert file.read() == b"inside"
                    read += 1
                await anyio.lowlevel.checkpoint()


async def test_writes_deletes_and_folders_never_land_outside(
    store: FileStore, workspace: uuid.UUID, outside: Path
) -> None:
    before = tree(outside)
    with flipping(store.workspace_root(workspace), outside):
        for _ in range(300):
            with contextlib.suppress(FileStoreError):
                await store.write(workspace, "data/new.txt", one_chunk(b"x"))
            with contextlib.suppress(FileStoreError):
                store.delete(workspace, "data/victim")
            with contextlib.suppress(FileStoreError):
                store.mkdir(workspace, "data/victim")
            with contextlib.suppress(FileStoreError):
                store.move(workspace, "data/secret.txt", "data/renamed.txt")
            with contextlib.suppress(FileStoreError):
                store.move(workspace, "data/renamed.txt", "data/secret.txt")
            await anyio.lowlevel.checkpoint()
    assert tree(outside) == before
    assert (outside / "secret.txt").read_text() == "OUTSIDE"


async def test_a_link_on_the_way_is_refused_even_one_that_stays_inside(
    store: FileStore, workspace: uuid.UUID
) -> None:
    root = store.workspace_root(workspace)
    (root / "real").mkdir()
    (root / "real" / "a.txt").write_text("a")
    os.symlink("real", root / "alias")
    calls = {
        "read": lambda: store.open_for_read(workspace, "alias/a.txt"),
        "list": lambda: store.list(workspace, "alias"),
        "delete": lambda: store.delete(workspace, "alias/a.txt"),
        "mkdir": lambda: store.mkdir(workspace, "alias/sub"),
        "move": lambda: store.move(workspace, "alias/a.txt", "b.txt"),
    }
    for name, call in calls.items():
        with pytest.raises(FileStoreError) as refused:
            call()
        assert refused.value.status == 403, name
        assert "'alias' is a link" in refused.value.message
    with pytest.raises(FileStoreError):
        await store.write(workspace, "alias/new.txt", one_chunk(b"x"))
    # The link itself is a listed entry, and can be deleted (the link, not its target).
    listing = {e["name"]: e["type"] for e in store.list(workspace)}
    assert listing == {"alias": "link", "real": "dir"}
    store.delete(workspace, "alias")
    assert (root / "real" / "a.txt").read_text() == "a"


async def test_pipes_and_linked_tables_are_listed_without_being_read(
    store: FileStore, workspace: uuid.UUID, outside: Path
) -> None:
    root = store.workspace_root(workspace)
    (outside / "t.csv").write_text("x,y\n1,2\n")
    os.symlink(outside / "t.csv", root / "linked.csv")
    os.mkfifo(root / "pipe.csv")  # opening it for reading would block forever
    (root / "real.csv").write_text("a,b\n1,2\n")
    with anyio.fail_after(5):
        listing = await anyio.to_thread.run_sync(
            lambda: {e["name"]: e for e in store.list(workspace, schema=True)}
        )
    assert [c["name"] for c in listing["real.csv"]["schema"]["columns"]] == ["a", "b"]
    assert listing["linked.csv"]["type"] == "link"
    assert "schema" not in listing["linked.csv"]
    assert "schema" not in listing["pipe.csv"]
    with pytest.raises(FileStoreError) as refused:
        store.open_for_read(workspace, "pipe.csv")
    assert "not a regular file" in refused.value.message


async def test_copying_a_workspace_copies_links_as_links(
    store: FileStore, workspace: uuid.UUID, outside: Path
) -> None:
    root = store.workspace_root(workspace)
    (root / "d").mkdir()
    (root / "d" / "f.txt").write_text("f")
    os.symlink(outside / "secret.txt", root / "d" / "out.txt")
    os.mkfifo(root / "pipe")
    copy = uuid.uuid4()
    await anyio.to_thread.run_sync(store.copy_workspace, workspace, copy)
    copied = store.workspace_root(copy)
    assert (copied / "d" / "f.txt").read_text() == "f"
    assert os.readlink(copied / "d" / "out.txt") == str(outside / "secret.txt")
    assert not (copied / "pipe").exists()
