"""Old environment sets are removed (WEFT_ENV_KEEP_DAYS): only sets nobody was given for that
long and no kernel mounts, only real directories of the store, never through a symlink, and
never between a prepare choosing a set and using it."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path

import anyio
import docker
import pytest

from executor.environments.images import RuntimeImages
from executor.environments.preparer import Environments, EnvironmentSettings
from executor.environments.store import EnvironmentStore
from tests.conftest import StartServer
from tests.executor.conftest import IMAGE, running_weft

DAY = 86400.0


def make_set(store: EnvironmentStore, key: str, *, age_days: float) -> Path:
    """A set as the store makes it (read-only files, a manifest), last used ``age_days`` ago."""
    sets = store.root / "sets"
    folder = sets / key
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "__init__.py").write_text("VERSION = '1'\n")
    os.chmod(folder / "pkg" / "__init__.py", 0o444)
    os.chmod(folder / "pkg", 0o555)
    os.chmod(folder, 0o555)
    (sets / f"{key}.json").write_text(json.dumps({"key": key, "bytes": 14}))
    (sets / f"{key}.used").touch()
    when = time.time() - age_days * DAY
    for path in (folder, sets / f"{key}.json", sets / f"{key}.used"):
        os.utime(path, (when, when), follow_symlinks=False)
    return folder


def key(n: int) -> str:
    return f"{n:032x}"


def test_only_sets_unused_for_the_kept_time_and_not_mounted_are_removed(tmp_path: Path) -> None:
    store = EnvironmentStore(tmp_path / "env")
    old, recent, mounted = key(1), key(2), key(3)
    for k, age in ((old, 40), (recent, 3), (mounted, 90)):
        make_set(store, k, age_days=age)
    removed = store.clean(30 * DAY, in_use={mounted})
    assert [(r.key, r.bytes) for r in removed] == [(old, 14)]
    sets = store.root / "sets"
    assert not (sets / old).exists()
    assert not (sets / f"{old}.json").exists()
    assert not (sets / f"{old}.used").exists()
    assert store.has(recent)
    assert store.has(mounted)
    assert not [p for p in sets.iterdir() if p.name.startswith(".removing-")]
    # A set given to a kernel again counts from then.
    assert store._take(mounted)
    assert store.clean(30 * DAY, in_use=set()) == []
    assert store.has(mounted)


def test_nothing_is_followed_out_of_the_store(tmp_path: Path) -> None:
    store = EnvironmentStore(tmp_path / "env")
    outside = tmp_path / "precious"
    (outside / "sub").mkdir(parents=True)
    (outside / "file.txt").write_text("keep me")
    os.chmod(outside, 0o700)
    sets = store.root / "sets"
    folder = make_set(store, key(1), age_days=100)
    os.chmod(folder, 0o755)
    (folder / "link-to-dir").symlink_to(outside)
    (folder / "link-to-file").symlink_to(outside / "file.txt")
    os.chmod(folder, 0o555)
    old = time.time() - 100 * DAY
    os.utime(folder, (old, old))
    # A "set" that is a symlink to a folder outside, named like a key, old.
    (sets / key(2)).symlink_to(outside)
    (sets / f"{key(2)}.json").write_text("{}")
    os.utime(sets / f"{key(2)}.json", (old, old))
    # And things that are no set at all.
    (sets / "not-a-key").mkdir()
    removed = store.clean(30 * DAY, in_use=set())
    assert [r.key for r in removed] == [key(1)]
    assert (outside / "file.txt").read_text() == "keep me"
    assert (outside / "sub").is_dir()
    assert outside.stat().st_mode & 0o777 == 0o700  # never chmod-ed through the link
    assert (sets / key(2)).is_symlink()  # not the store's: left alone
    assert (sets / "not-a-key").is_dir()


def test_a_prepare_holding_the_lock_keeps_its_set(tmp_path: Path) -> None:
    """A removal waits for a prepare that is choosing the set; the prepare's use then counts,
    so the removal keeps it. And a set removed first is simply missing to the next prepare."""
    store = EnvironmentStore(tmp_path / "env")
    make_set(store, key(1), age_days=100)
    make_set(store, key(2), age_days=100)
    result: list[list[str]] = []
    with store._locked():  # a prepare in the middle of _take(key(1)) ...
        cleaner = threading.Thread(
            target=lambda: result.append([r.key for r in store.clean(30 * DAY, set())])
        )
        cleaner.start()
        time.sleep(0.3)
        assert result == []  # ... the removal waits for it
        store._touch(key(1))  # ... which marks the set used
    cleaner.join(10)
    assert result == [[key(2)]]
    assert store.has(key(1))
    assert not store._take(key(2))  # gone: a prepare builds it again


def test_a_crashed_build_is_removed_after_a_day(tmp_path: Path) -> None:
    store = EnvironmentStore(tmp_path / "env")
    sets = store.root / "sets"
    stale, fresh = sets / f".building-{key(1)}-aaaa", sets / f".building-{key(2)}-bbbb"
    for folder in (stale, fresh):
        (folder / "pkg").mkdir(parents=True)
        os.chmod(folder / "pkg", 0o555)
    old = time.time() - 2 * DAY
    os.utime(stale, (old, old))
    store.clean(30 * DAY, set())
    assert not stale.exists()
    assert fresh.is_dir()


@pytest.mark.anyio
@pytest.mark.docker
async def test_a_set_a_container_mounts_is_kept_until_it_is_gone(
    tmp_path: Path, docker_engine: docker.DockerClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Kernels of another server on the same engine count: their containers' mounts are read."""
    settings = EnvironmentSettings(tmp_path / "env", keep_days=30)
    environments = Environments(settings, RuntimeImages.parse(IMAGE, None))
    folder = make_set(environments.store, key(7), age_days=60)
    container = docker_engine.containers.create(
        IMAGE,
        ["true"],
        network_mode="none",
        labels={"weft.kernel": "1", "weft.instance": f"weft-test-{uuid.uuid4().hex[:8]}"},
        volumes={str(folder): {"bind": "/opt/weft-env", "mode": "ro"}},
    )
    try:
        assert await environments.clean(docker_engine, set()) == []
        assert environments.store.has(key(7))
    finally:
        await anyio.to_thread.run_sync(lambda: container.remove(force=True))
    with caplog.at_level(logging.INFO, logger="executor.environments.preparer"):
        removed = await environments.clean(docker_engine, set())
    assert [r.key for r in removed] == [key(7)]
    lines = [r for r in caplog.records if r.getMessage() == "environment set removed"]
    assert len(lines) == 1
    assert getattr(lines[0], "key", None) == key(7)
    assert getattr(lines[0], "bytes", None) == 14
    # Off: nothing is removed, however old.
    off = Environments(EnvironmentSettings(tmp_path / "env", keep_days=0), environments.images)
    make_set(off.store, key(8), age_days=1000)
    assert await off.clean(docker_engine, set()) == []


@pytest.mark.anyio
@pytest.mark.docker
@pytest.mark.timeout(180)
async def test_a_server_removes_old_sets_when_it_starts(
    tmp_path: Path, docker_engine: docker.DockerClient, start_server: StartServer
) -> None:
    store = EnvironmentStore(tmp_path / "env")
    make_set(store, key(1), age_days=40)
    make_set(store, key(2), age_days=2)
    async with running_weft(
        docker_engine, start_server, WEFT_ENV_DIR=str(store.root), WEFT_ENV_KEEP_DAYS="30"
    ) as weft:
        with anyio.fail_after(60):
            while store.has(key(1)):
                await anyio.sleep(0.1)
        assert store.has(key(2))
        with anyio.fail_after(10):
            while "environment set removed" not in weft.server.log_text():
                await anyio.sleep(0.1)
        line = next(
            json.loads(text)
            for text in weft.server.log_text().splitlines()
            if "environment set removed" in text
        )
        assert line["key"] == key(1)
        assert line["bytes"] == 14
