"""Time to first run of a notebook that declares dependencies: commit of its first cell
(`import ...`) to `done`, through a real server, real Docker and a real package index on
127.0.0.1 (tests/support/package_index.py; real wheels: tabulate from PyPI as fetched by
scripts/setup.sh --dev, plus small wheels built here). Three cases, each a fresh notebook:

- no dependencies: the floor (a kernel start and the cell),
- a new set: resolution, download, install into a new directory, then the kernel,
- the same set again (a cached directory): resolution only, no download, no install,
- a copy of a resolved notebook (its record is reused): no resolution at all.

Every sample uses another set for "new" (a distinct built wheel), so nothing is cached.
Prints one JSON line.

    .venv/bin/python bench/env_first_run.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import sign_up  # noqa: E402
from tests.support.package_index import SETUP_WHEELS, PackageIndex, build_wheel  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_s": round(statistics.median(ordered), 2),
        "min_s": round(ordered[0], 2),
        "max_s": round(ordered[-1], 2),
        "n": len(ordered),
    }


async def first_run(
    api: httpx.AsyncClient, workspace: str, deps: list[str], code: str
) -> tuple[str, float]:
    """A new notebook with ``deps`` and one cell; (its id, the time its first run took)."""
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"dependencies": deps} if deps else {},
        "cells": [
            {
                "id": "c",
                "cell_type": "code",
                "source": code,
                "metadata": {},
                "outputs": [],
                "execution_count": None,
            }
        ],
    }
    response = await api.post(
        f"/api/workspaces/{workspace}/notebooks/import", content=json.dumps(notebook)
    )
    notebook_id: str = response.json()["id"]
    return notebook_id, await timed_run(api, notebook_id)


async def timed_run(api: httpx.AsyncClient, notebook_id: str) -> float:
    started = time.monotonic()
    response = await api.post(f"/api/notebooks/{notebook_id}/cells/c/run", json={})
    run_id = response.json()["run_id"]
    while True:
        run: dict[str, Any] = (await api.get(f"/api/runs/{run_id}")).json()
        if run["state"] in ("done", "error", "cancelled"):
            break
        await anyio.sleep(0.02)
    if run["state"] != "done":
        raise RuntimeError(f"the run failed: {run}")
    return time.monotonic() - started


async def main(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "index"
        tabulate = SETUP_WHEELS / "tabulate-0.10.0-py3-none-any.whl"
        if not tabulate.exists():
            raise SystemExit(f"{tabulate} is missing: run scripts/setup.sh --dev")
        folder.mkdir()
        (folder / tabulate.name).write_bytes(tabulate.read_bytes())
        names = [f"benchpkg{uuid.uuid4().hex[:6]}" for _ in range(rounds)]
        for name in names:
            build_wheel(folder, name, "1.0")
        with PackageIndex(folder) as index:
            server = ServerProcess(
                state_dir=Path(scratch) / "state",
                env={"WEFT_LOG_LEVEL": "WARNING", "WEFT_PACKAGE_INDEX_URL": index.url},
            )
            await server.start()
            try:
                token = await sign_up(server.url, "bench@example.org", "Bench")
                auth = {"Authorization": f"Bearer {token}"}
                async with httpx.AsyncClient(base_url=server.url, timeout=300, headers=auth) as api:
                    workspace = (await api.post("/api/workspaces", json={"name": "b"})).json()["id"]
                    await first_run(api, workspace, [], "1")  # probes the image once
                    floor, new, cached, copied = [], [], [], []
                    for name in names:
                        floor.append((await first_run(api, workspace, [], "1"))[1])
                        deps = ["tabulate", name]
                        code = f"import tabulate, {name}"
                        source, seconds = await first_run(api, workspace, deps, code)
                        new.append(seconds)
                        cached.append((await first_run(api, workspace, deps, code))[1])
                        response = await api.post(
                            f"/api/notebooks/{source}/copy", json={"title": "copy"}
                        )
                        copied.append(await timed_run(api, response.json()["id"]))
            finally:
                server.stop()
    return {
        "bench": "env_first_run",
        "no_dependencies": summary(floor),
        "new_set": summary(new),
        "cached_set": summary(cached),
        "copy_with_record": summary(copied),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(anyio.run(main, args.rounds)))
