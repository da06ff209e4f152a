"""Where a trivial run's time goes, phase by phase, from the server's own log lines
("run finished" and "kernel started" carry `phases_ms`: executor/phases.py).

Warm runs (the kernel up), then cold ones (the kernel restarted before each, as
bench/run_overhead.py does); prints one JSON line: the client's p50 and each phase's p50,
min and max. Not a comparison with anything: run_overhead.py is that.

    .venv/bin/python bench/run_phases.py --warm 25 --cold 6 [--image weft-runtime:TAG]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import httpx
from pycrdt import Map

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run_overhead import NOTEBOOK, commit_until_done  # noqa: E402
from tests.conftest import sign_up  # noqa: E402
from tests.support.pyclient import py_client  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402


def spread(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def phases(records: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    names = dict.fromkeys(name for record in records for name in record)
    return {name: spread([r[name] for r in records if name in r]) for name in names}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as state:
        env = {
            "WEFT_LOG_LEVEL": "INFO",  # the phases are in INFO lines
            "WEFT_KERNEL_PRESTART": "off",
            "WEFT_KERNEL_IMAGE": args.image,
        }
        server = ServerProcess(state_dir=Path(state), env=env)
        await server.start()
        try:
            token = await sign_up(server.url, "phases@example.org", "Phases")
            auth = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=auth) as api:
                ws = (await api.post("/api/workspaces", json={"name": "phases"})).json()["id"]
                url = f"/api/workspaces/{ws}/notebooks/import"
                nid = (await api.post(url, content=json.dumps(NOTEBOOK))).json()["id"]
                async with py_client(server.ws_base, nid, token=token) as client:
                    runs = client.doc.get("runs", type=Map)
                    await commit_until_done(api, nid, runs)  # start the kernel
                    warm = [await commit_until_done(api, nid, runs) for _ in range(args.warm)]
                    cold = []
                    for _ in range(args.cold):
                        await api.post(f"/api/notebooks/{nid}/restart")
                        cold.append(await commit_until_done(api, nid, runs))
        finally:
            server.stop()
        lines = [json.loads(line) for line in server.log_text().splitlines() if line[:1] == "{"]
    finished = [x["phases_ms"] for x in lines if x.get("event") == "run finished"]
    started = [x["phases_ms"] for x in lines if x.get("event") == "kernel started"]
    result: dict[str, Any] = {"bench": "run_phases", "image": args.image}
    result["warm"] = {
        "client_ms": spread([w * 1000 for w in warm]),
        "phases_ms": phases(finished[1 : 1 + args.warm]),
    }
    if cold:
        result["cold"] = {
            "client_ms": spread([c * 1000 for c in cold]),
            "phases_ms": phases(finished[1 + args.warm :]),
            "kernel_start_ms": phases(started[1:]),
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=25)
    parser.add_argument("--cold", type=int, default=6)
    parser.add_argument("--image", default="weft-runtime:latest")
    print(json.dumps(anyio.run(measure, parser.parse_args())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
