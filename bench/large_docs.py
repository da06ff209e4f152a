"""Large documents: join time and server memory for notebooks of 1,000 and 10,000 cells.

For each size and each server (Weft, Jupyter's stack; `--servers` adds others of
bench/sync_latency.py), in one invocation:

1. A notebook of `cells` cells is made: 4 code cells in 5, each with a 3-line source and
   two outputs (a 4-line stream and an `execute_result` with text/plain), the fifth a
   markdown cell (`make_ipynb`; ~0.5 KB of JSON per cell).
   Weft: imported through its API (`POST .../notebooks/import`), the way a user brings one in.
   Others: a Yjs client builds the same cells in the room in one transaction
   (`bench/js/large_doc.mjs seed`), and the server persists it to its SQLite store.
2. The server is restarted on the same state: nothing is loaded.
3. **cold**: one official Yjs client joins (creating the provider -> synced with every cell
   in its copy), the server loading the document from its store; it stays connected.
   **warm**: `--warm` more clients join one after the other while it is (the room loaded).
4. Server memory (PSS, MB) before the cold join and with the room loaded; Weft's
   PostgreSQL separately.

    .venv/bin/python bench/large_docs.py
    .venv/bin/python bench/large_docs.py --cells 1000,10000 --warm 3 --repeat 3

One JSON line; see bench/README.md and docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sync_latency as sl
from capacity import pss_mb

JS = sl.JS_DIR / "large_doc.mjs"


def log(message: str) -> None:
    print(f"[large_docs] {message}", file=sys.stderr, flush=True)


def make_ipynb(cells: int) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for i in range(cells):
        if i % 5 == 4:
            out.append(
                {
                    "cell_type": "markdown",
                    "id": f"c{i:05d}",
                    "metadata": {},
                    "source": [f"## Step {i}\n", "Some notes about the analysis above.\n"],
                }
            )
            continue
        out.append(
            {
                "cell_type": "code",
                "id": f"c{i:05d}",
                "metadata": {},
                "execution_count": i + 1,
                "source": [
                    f"df_{i} = load(part={i})\n",
                    f"summary_{i} = df_{i}.describe()\n",
                    f"print(summary_{i}.head())",
                ],
                "outputs": [
                    {
                        "output_type": "stream",
                        "name": "stdout",
                        "text": [f"row {r}: {i * 7 + r:>8} {0.5 * r:.3f} ok\n" for r in range(4)],
                    },
                    {
                        "output_type": "execute_result",
                        "execution_count": i + 1,
                        "metadata": {},
                        "data": {"text/plain": [f"<Summary {i}: 4 rows x 3 columns>"]},
                    },
                ],
            }
        )
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "cells": out,
    }


async def node(config: dict[str, Any], timeout: float, hold: bool = False) -> Any:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(JS),
        json.dumps(config),
        cwd=sl.JS_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 24,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise sl.BenchError(
            f"large_doc.mjs {config['mode']}: nothing within {timeout:.0f} s"
        ) from None
    answer = json.loads(line) if line else {"error": "no output"}
    if "error" in answer:
        proc.kill()
        await proc.wait()
        raise sl.BenchError(f"large_doc.mjs {config['mode']}: {answer['error']}")
    if hold:
        return answer, proc
    proc.stdin.close()
    await asyncio.wait_for(proc.wait(), 30)
    return answer, None


def memory(server: sl.Server) -> tuple[float, float | None]:
    pg = server.postgres_pids()
    return pss_mb(server.server_pids()), (pss_mb(pg) if pg is not None else None)


async def one(name: str, cells: int, ipynb: Path, args: argparse.Namespace) -> dict[str, Any]:
    server = sl.make_server(name, args)
    result: dict[str, Any] = {}
    holder = None
    try:
        await server.start()
        t0 = time.monotonic()
        if isinstance(server, sl.WeftServer):
            base = f"http://127.0.0.1:{server.port}"
            token = await sl.sign_up(base)
            status, ws = await asyncio.to_thread(
                sl.http_json, "POST", f"{base}/api/workspaces", {"name": "large"}, token
            )
            status, nb = await asyncio.to_thread(
                import_ipynb, f"{base}/api/workspaces/{ws['id']}/notebooks/import", ipynb, token
            )
            if status != 201:
                raise sl.BenchError(f"import answered {status}: {str(nb)[:300]}")
            url, room = f"ws://127.0.0.1:{server.port}/ws", f"{nb['id']}?token={token}"
            result["seed"] = "POST .../notebooks/import"
        else:
            url, room = await server.room()
            seeded, _ = await node(
                {
                    "mode": "seed",
                    "url": url,
                    "room": room,
                    "provider": server.provider,
                    "ipynb": str(ipynb),
                    "settleMs": args.settle_ms,
                },
                600,
            )
            result["seed"] = "Yjs client, one transaction"
            result["seed_update_bytes"] = seeded["update_bytes"]
        result["seed_s"] = sl.rounded(time.monotonic() - t0)
        server.restart_keep_state()  # type: ignore[attr-defined]
        await server.start()
        await asyncio.sleep(2)
        mem0 = memory(server)
        joined, holder = await node(
            {
                "mode": "join",
                "url": url,
                "room": room,
                "provider": server.provider,
                "cells": cells,
                "warm": args.warm,
                "timeoutMs": 120_000,
            },
            120 * (2 + args.warm),
            hold=True,
        )
        await asyncio.sleep(1)
        mem1 = memory(server)
        warm = [w for w in joined["warm_ms"] if w is not None]
        result.update(
            {
                "cells_joined": joined["cells"],
                "complete": joined["cells"] == cells and len(warm) == args.warm,
                "doc_bytes": joined["doc_bytes"],
                "cold_join_ms": joined["cold_ms"],
                "warm_join_ms": warm,
                "warm_join_median_ms": sl.rounded(statistics.median(warm)) if warm else None,
                "server_mem_idle_mb": sl.rounded(mem0[0], 1),
                "server_mem_loaded_mb": sl.rounded(mem1[0], 1),
                "server_mem_added_mb": sl.rounded(mem1[0] - mem0[0], 1),
                "postgres_mem_loaded_mb": sl.rounded(mem1[1], 1) if mem1[1] else None,
            }
        )
    except (sl.BenchError, OSError, RuntimeError, KeyError, TypeError) as exc:
        result["error"] = str(exc)
        log(f"{name} {cells}: {exc}")
    finally:
        if holder is not None:
            if holder.stdin is not None:
                holder.stdin.close()
            try:
                await asyncio.wait_for(holder.wait(), 10)
            except TimeoutError:
                holder.kill()
                await holder.wait()
        sl.keep_log_if_failed(server, result)
        server.stop()
    return result


def import_ipynb(url: str, path: Path, token: str) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=path.read_bytes(), method="POST")
    request.add_header("Content-Type", "application/x-ipynb+json")
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="weft,jupyter")
    parser.add_argument("--cells", default="1000,10000")
    parser.add_argument("--warm", type=int, default=3, help="warm joins after the cold one")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each (size, server)")
    parser.add_argument("--settle-ms", type=int, default=4000, help="seeding: wait to persist")
    parser.add_argument(
        "--weft-src", type=Path, help=f"also run Weft from this source tree as {sl.BEFORE!r}"
    )
    args = parser.parse_args(argv)
    args.server_url = args.token = None
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if args.weft_src is not None:
        args.weft_src = args.weft_src.resolve()
        where = args.servers.index("weft") + 1 if "weft" in args.servers else 0
        args.servers.insert(where, sl.BEFORE)
    if any(s not in (*sl.SERVER_NAMES, sl.BEFORE) or s == "reference" for s in args.servers):
        parser.error("--servers: weft, jupyter, hocuspocus (the reference does not persist)")
    args.cells = [int(c) for c in args.cells.split(",")]
    if not all(1 <= c <= 50_000 for c in args.cells) or not 0 <= args.warm <= 10:
        parser.error("--cells 1..50000, --warm 0..10")
    if not 1 <= args.repeat <= 10:
        parser.error("--repeat 1..10")
    return args


async def amain(args: argparse.Namespace) -> int:
    line: dict[str, Any] = {
        "bench": "large_docs",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "rev": sl.git_revision(),
        "warm_joins": args.warm,
    }
    failed = False
    with tempfile.TemporaryDirectory(prefix="weft-bench-large-") as tmp:
        for cells in args.cells:
            ipynb = Path(tmp) / f"{cells}.ipynb"
            ipynb.write_text(json.dumps(make_ipynb(cells)))
            entry: dict[str, Any] = {"ipynb_bytes": ipynb.stat().st_size}
            for name in args.servers:
                runs = []
                for r in range(args.repeat):
                    log(f"{cells} cells, {name}, run {r + 1}")
                    runs.append(await one(name, cells, ipynb, args))
                    failed = failed or "error" in runs[-1]
                entry[name] = runs
            line[f"cells_{cells}"] = entry
    print(json.dumps(line), flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sl.ensure_node_modules()
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
