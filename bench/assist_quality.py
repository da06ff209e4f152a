"""How often the assistant's code is right, with and without the schema context.

Each task in ``bench/assist_tasks/*.json`` is a small notebook (files for the workspace, the
cells above, the request, optionally a broken cell to fix) and a check: a cell run after
the generated one in the real executor, which asserts on what the code computed. The
harness starts a Weft server (executor on, Docker required) for each arm, with
``WEFT_AI_SCHEMAS=on`` and ``off``, asks the configured model for every task, accepts the
suggestion, runs the cell and the check, and prints the pass rates.

    export OPENAI_API_KEY=... OPENAI_BASE_URL=... WEFT_AI_MODEL=...
    .venv/bin/python bench/assist_quality.py
    .venv/bin/python bench/assist_quality.py --gguf /path/model.gguf   # llama-cpp-python's server

Without a configured model it says so and exits 2. It exits 0 when every task could be run
(whatever the score) and 1 when something broke (the server, the executor, the provider).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.server import ServerProcess  # noqa: E402

TASKS = ROOT / "bench" / "assist_tasks"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_tasks(only: list[str] | None) -> list[dict[str, Any]]:
    tasks = []
    for path in sorted(TASKS.glob("*.json")):
        if only and path.stem not in only:
            continue
        task = json.loads(path.read_text())
        task["name"] = path.stem
        tasks.append(task)
    return tasks


def _cell(cell_id: str, source: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": cell_id,
        "cell_type": "code",
        "source": source,
        "metadata": metadata or {},
        "outputs": [],
        "execution_count": None,
    }


async def _wait_run(api: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    with anyio.fail_after(180):
        while True:
            run: dict[str, Any] = (await api.get(f"/api/runs/{run_id}")).json()
            if run["state"] in ("done", "error", "cancelled"):
                return run
            await anyio.sleep(0.1)


async def _run(api: httpx.AsyncClient, notebook_id: str, cell_id: str) -> dict[str, Any]:
    response = await api.post(f"/api/notebooks/{notebook_id}/cells/{cell_id}/run", json={})
    response.raise_for_status()
    return await _wait_run(api, response.json()["run_id"])


def _error_text(run: dict[str, Any]) -> str:
    for output in run.get("outputs") or []:
        if output.get("output_type") == "error":
            return f"{output.get('ename')}: {output.get('evalue')}"
    return str(run.get("error") or run.get("state"))


async def run_task(api: httpx.AsyncClient, task: dict[str, Any]) -> dict[str, Any]:
    workspace = (await api.post("/api/workspaces", json={"name": f"bench {task['name']}"})).json()
    ws = workspace["id"]
    for path, content in (task.get("files") or {}).items():
        await _upload(api, ws, path, content.encode())
    for path, columns in (task.get("files_parquet") or {}).items():
        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(pa.table(columns), buffer)
        await _upload(api, ws, path, buffer.getvalue())
    above = [_cell(f"a{i}", source) for i, source in enumerate(task["cells"])]
    metadata: dict[str, Any] = {}
    if task.get("target_language"):
        metadata["language"] = task["target_language"]
    if task.get("target_output"):
        metadata["output_name"] = task["target_output"]
    target = _cell("target", task.get("target_source", ""), metadata)
    check = _cell("check", task["check"])
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [*above, target, check],
    }
    response = await api.post(
        f"/api/workspaces/{ws}/notebooks/import", content=json.dumps(notebook)
    )
    response.raise_for_status()
    notebook_id = response.json()["id"]
    for cell in above:
        run = await _run(api, notebook_id, cell["id"])
        if run["state"] != "done":
            raise RuntimeError(f"{task['name']}: setup cell failed: {_error_text(run)}")
    if task["mode"] == "fix":
        await _run(api, notebook_id, "target")
    started = time.monotonic()
    response = await api.post(
        f"/api/notebooks/{notebook_id}/cells/target/assist",
        json={"instruction": task["instruction"], "mode": task["mode"]},
    )
    response.raise_for_status()
    generation_id = response.json()["generation_id"]
    with anyio.fail_after(300):
        while True:
            generation = (await api.get(f"/api/generations/{generation_id}")).json()
            if generation["state"] not in ("starting", "streaming"):
                break
            await anyio.sleep(0.1)
    seconds = round(time.monotonic() - started, 2)
    if generation["state"] != "pending":
        error = generation.get("error") or {}
        if error.get("code") in ("empty",):
            return {
                "task": task["name"],
                "passed": False,
                "why": error.get("message"),
                "s": seconds,
            }
        raise RuntimeError(f"{task['name']}: generation {generation['state']}: {error}")
    await api.post(f"/api/generations/{generation_id}/accept")
    code = generation["code"]
    run = await _run(api, notebook_id, "target")
    if run["state"] != "done":
        return {
            "task": task["name"],
            "passed": False,
            "why": _error_text(run),
            "code": code,
            "s": seconds,
        }
    run = await _run(api, notebook_id, "check")
    passed = run["state"] == "done"
    result = {"task": task["name"], "passed": passed, "code": code, "s": seconds}
    if not passed:
        result["why"] = _error_text(run)
    return result


async def _upload(api: httpx.AsyncClient, ws: str, path: str, data: bytes) -> None:
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    if folder:
        await api.post(f"/api/workspaces/{ws}/folders", json={"path": folder})
    response = await api.put(f"/api/workspaces/{ws}/files/{path}", content=data)
    response.raise_for_status()


@contextlib.asynccontextmanager
async def weft(schemas: bool) -> AsyncIterator[httpx.AsyncClient]:
    with tempfile.TemporaryDirectory() as state:
        server = ServerProcess(
            state_dir=Path(state),
            env={
                "WEFT_LOG_LEVEL": "WARNING",
                "WEFT_AI_SCHEMAS": "on" if schemas else "off",
                "WEFT_AI_RATE_LIMIT": "1000",
                "WEFT_INSTANCE": f"weft-bench-{os.getpid()}",
            },
        )
        await server.start(timeout=120)
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as api:
                signup = await api.post(
                    "/api/auth/signup",
                    json={
                        "email": "bench@example.org",
                        "password": "bench password 1",
                        "name": "Bench",
                    },
                )
                if signup.status_code == 201:
                    api.headers["Authorization"] = f"Bearer {signup.json()['token']}"
                yield api
        finally:
            server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def llama_server(gguf: str) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on a free port, for a local model."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            gguf,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "4096",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError("llama_cpp.server exited (is llama-cpp-python installed?)")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama_cpp.server did not start")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


async def bench(tasks: list[dict[str, Any]], arms: list[bool]) -> dict[str, Any]:
    report: dict[str, Any] = {"model": os.environ.get("WEFT_AI_MODEL"), "tasks": len(tasks)}
    for schemas in arms:
        name = "with_schemas" if schemas else "without_schemas"
        log(f"[assist_quality] {name}: starting a server")
        results = []
        async with weft(schemas) as api:
            for task in tasks:
                result = await run_task(api, task)
                verdict = "pass" if result["passed"] else "FAIL"
                log(f"[assist_quality] {name} {task['name']}: {verdict}")
                results.append(result)
        passed = sum(1 for r in results if r["passed"])
        report[name] = {
            "passed": passed,
            "rate": round(passed / max(1, len(results)), 3),
            "results": results,
        }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", action="append", help="run only these tasks (file stems)")
    parser.add_argument("--only", choices=["with", "without"], help="run one arm only")
    parser.add_argument("--gguf", help="serve this GGUF model with llama-cpp-python and use it")
    args = parser.parse_args()
    tasks = load_tasks(args.task)
    arms = {"with": [True], "without": [False]}.get(args.only or "", [True, False])
    with contextlib.ExitStack() as stack:
        if args.gguf:
            os.environ["OPENAI_BASE_URL"] = stack.enter_context(llama_server(args.gguf))
            os.environ.setdefault("OPENAI_API_KEY", "local")
            os.environ.setdefault("WEFT_AI_MODEL", Path(args.gguf).stem)
        if not os.environ.get("OPENAI_API_KEY"):
            log(
                "[assist_quality] no model is configured: set OPENAI_API_KEY (any value for a "
                "local server), OPENAI_BASE_URL and WEFT_AI_MODEL, or pass --gguf PATH"
            )
            return 2
        try:
            report = anyio.run(bench, tasks, arms)
        except Exception as exc:
            log(f"[assist_quality] failed: {exc}")
            return 1
    print(json.dumps(report))
    for arm in ("with_schemas", "without_schemas"):
        if arm in report:
            log(f"[assist_quality] {arm}: {report[arm]['passed']}/{len(tasks)} passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
