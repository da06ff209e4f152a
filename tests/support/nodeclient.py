"""The official Yjs client (yjs + y-websocket under Node), driven over stdin/stdout."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio

JS_DIR = Path(__file__).resolve().parents[1] / "js"


class NodeYClient:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            message = json.loads(line)
            if "id" in message and message["id"] in self._replies:
                self._replies.pop(message["id"]).set_result(message)
            else:
                self.events.append(message)
                self._changed.set()

    async def call(self, op: str, timeout: float = 15, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        cid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[cid] = future
        self.proc.stdin.write((json.dumps({"id": cid, "op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        with anyio.fail_after(timeout):
            reply = await future
        if "error" in reply:
            raise RuntimeError(f"node client failed on {op}: {reply['error']}")
        return reply

    async def event(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> dict[str, Any]:
        with anyio.fail_after(timeout):
            while True:
                for event in self.events:
                    if match(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

    async def synced(self, timeout: float = 10) -> None:
        await self.event(lambda e: e.get("event") == "synced" and e.get("synced"), timeout)

    async def text(self, cell: int = 0) -> str:
        cells = (await self.call("get"))["cells"]
        return str(cells[cell]["source"])

    async def wait_text(self, contains: str, cell: int = 0, timeout: float = 10) -> None:
        reply = await self.call(
            "wait",
            timeout=timeout + 5,
            cell=cell,
            contains=contains,
            timeout_ms=int(timeout * 1000),
        )
        assert reply["ok"], f"{contains!r} never appeared; text is {reply.get('text')!r}"

    async def wait_exact_text(self, text: str, cell: int = 0, timeout: float = 10) -> None:
        reply = await self.call(
            "wait", timeout=timeout + 5, cell=cell, equals=text, timeout_ms=int(timeout * 1000)
        )
        assert reply["ok"], f"the text never became {text!r}; it is {reply.get('text')!r}"

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()


@contextlib.asynccontextmanager
async def node_client(
    ws_base: str, notebook_id: str, token: str | None = None, wait_synced: bool = True
) -> AsyncIterator[NodeYClient]:
    args = [str(JS_DIR / "yclient.mjs"), ws_base, notebook_id] + ([token] if token else [])
    proc = await asyncio.create_subprocess_exec(
        "node",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=JS_DIR,
    )
    client = NodeYClient(proc)
    try:
        if wait_synced:
            await client.synced()
        yield client
    finally:
        await client.close()
