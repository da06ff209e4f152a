"""Per-run overhead of a trivial cell (`1+1`), from commit to `done` visible to a client.

Side by side in one run: a warm Weft kernel, a cold Weft kernel (restarted before each
run), a Jupyter kernel (ipykernel through jupyter_client) executing the same cell, and a bare
`docker run` of the runtime image as the floor for a cold start. Prints one JSON line.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/run_overhead.py --warm 30 --cold 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import sign_up  # noqa: E402
from tests.support.pyclient import py_client  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 2),
        "min_ms": round(ordered[0] * 1000, 2),
        "n": len(ordered),
    }


async def weft_runs(warm: int, cold: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as state:
        server = ServerProcess(state_dir=Path(state), env={"WEFT_LOG_LEVEL": "WARNING"})
        await server.start()
        try:
            token = await sign_up(server.url, "bench@example.org", "Bench")
            auth = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=auth) as api:
                ws = (await api.post("/api/workspaces", json={"name": "bench"})).json()["id"]
                notebook = {
                    "nbformat": 4,
                    "nbformat_minor": 5,
                    "metadata": {},
                    "cells": [
                        {
                            "id": "c",
                            "cell_type": "code",
                            "source": "1+1",
                            "metadata": {},
                            "outputs": [],
                            "execution_count": None,
                        }
                    ],
                }
                nid = (
                    await api.post(
                        f"/api/workspaces/{ws}/notebooks/import", content=json.dumps(notebook)
                    )
                ).json()["id"]
                async with py_client(server.ws_base, nid, token=token) as client:
                    runs = client.doc.get_map("runs")

                    async def one() -> float:
                        started = time.perf_counter()
                        response = await api.post(f"/api/notebooks/{nid}/cells/c/run", json={})
                        run_id = response.json()["run_id"]
                        with anyio.fail_after(60):
                            while True:
                                state = runs["c"] if "c" in runs else None
                                if state and state["run_id"] == run_id and state["state"] == "done":
                                    return time.perf_counter() - started
                                await anyio.sleep(0.0005)

                    await one()  # start the kernel
                    warm_samples = [await one() for _ in range(warm)]
                    cold_samples = []
                    for _ in range(cold):
                        await api.post(f"/api/notebooks/{nid}/restart")
                        cold_samples.append(await one())
                    return warm_samples, cold_samples
        finally:
            server.stop()


def jupyter_runs(count: int) -> list[float]:
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3")
    try:
        client.execute_interactive("1+1", timeout=60, output_hook=lambda msg: None)
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            reply = client.execute_interactive("1+1", timeout=60, output_hook=lambda msg: None)
            assert reply["content"]["status"] == "ok"
            samples.append(time.perf_counter() - started)
        return samples
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def docker_runs(count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--network",
                "none",
                "--read-only",
                "--cap-drop",
                "ALL",
                "weft-runtime:latest",
                "python3",
                "-c",
                "1+1",
            ],
            check=True,
            capture_output=True,
        )
        samples.append(time.perf_counter() - started)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=30)
    parser.add_argument("--cold", type=int, default=8)
    args = parser.parse_args()
    try:
        import ipykernel  # noqa: F401
        import jupyter_client  # noqa: F401
    except ImportError:
        print(
            "bench: needs ipykernel and jupyter_client: .venv/bin/pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return 2
    warm, cold = anyio.run(weft_runs, args.warm, args.cold)
    jupyter = jupyter_runs(args.warm)
    bare = docker_runs(args.cold)
    result = {
        "bench": "run_overhead",
        "weft_warm": summary(warm),
        "weft_cold": summary(cold),
        "jupyter": summary(jupyter),
        "docker_run": summary(bare),
    }
    result["ratio"] = {
        "warm_vs_jupyter": round(result["weft_warm"]["p50_ms"] / result["jupyter"]["p50_ms"], 2),
        "cold_vs_docker_run": round(
            result["weft_cold"]["p50_ms"] / result["docker_run"]["p50_ms"], 2
        ),
    }
    result["targets_met"] = {
        "warm_within_3x_jupyter": result["ratio"]["warm_vs_jupyter"] <= 3,
        "cold_within_1_5x_docker_run": result["ratio"]["cold_vs_docker_run"] <= 1.5,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
