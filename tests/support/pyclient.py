"""A Python Yjs client (pycrdt over the websockets library), also able to send raw frames."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
from pycrdt import Array, Doc, Text, TransactionEvent
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from collab.sync import protocol


class PyYClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.doc: Doc[Any] = Doc()
        self.synced = anyio.Event()
        self.closed = anyio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.awareness: dict[int, str] = {}
        self.frames_received = 0
        self.updates_received = 0
        self._remote = False
        self._outbox: list[bytes] = []
        self.doc.observe(self._local_update)

    def _local_update(self, event: TransactionEvent) -> None:
        if not self._remote:
            update = bytes(event.update)
            if update != b"\x00\x00":
                self._outbox.append(update)

    async def flush(self) -> None:
        outbox, self._outbox = self._outbox, []
        for update in outbox:
            await self.ws.send(protocol.create_update_message(update))

    async def run(self) -> None:
        try:
            async for frame in self.ws:
                assert isinstance(frame, bytes)
                self.frames_received += 1
                message = protocol.parse_message(frame)
                if message.kind is protocol.MessageType.SYNC:
                    if message.sync_type is protocol.SyncType.STEP1:
                        update = self.doc.get_update(message.payload)
                        await self.ws.send(protocol.create_sync_step2_message(update))
                    else:
                        if message.sync_type is protocol.SyncType.UPDATE:
                            self.updates_received += 1
                        self._remote = True
                        try:
                            self.doc.apply_update(message.payload)
                        finally:
                            self._remote = False
                        if message.sync_type is protocol.SyncType.STEP2:
                            self.synced.set()
                elif message.kind is protocol.MessageType.AWARENESS:
                    for entry in protocol.decode_awareness(message.payload):
                        if entry.removed:
                            self.awareness.pop(entry.client_id, None)
                        else:
                            self.awareness[entry.client_id] = entry.state
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason or ""
            self.closed.set()

    def source(self, cell: int = 0) -> Text:
        source: Text = self.doc.get("cells", type=Array)[cell]["source"]
        return source

    def text(self, cell: int = 0) -> str:
        return str(self.source(cell))

    async def insert(self, index: int, text: str, cell: int = 0) -> None:
        source = self.source(cell)
        source.insert(min(index, len(source)), text)
        await self.flush()

    async def delete(self, index: int, length: int, cell: int = 0) -> None:
        source = self.source(cell)
        del source[index : index + length]
        await self.flush()

    async def wait_updates(self, count: int, timeout: float = 10) -> None:
        with anyio.fail_after(timeout):
            while self.updates_received < count:
                await anyio.sleep(0.005)

    async def wait_text(self, contains: str, cell: int = 0, timeout: float = 10) -> None:
        with anyio.fail_after(timeout):
            while contains not in self.text(cell):
                await anyio.sleep(0.01)

    async def wait_closed(self, timeout: float = 10) -> tuple[int | None, str]:
        with anyio.fail_after(timeout):
            await self.closed.wait()
        return self.close_code, self.close_reason


@contextlib.asynccontextmanager
async def py_client(
    ws_base: str,
    notebook_id: str,
    *,
    token: str | None = None,
    sync: bool = True,
    query: str = "",
) -> AsyncIterator[PyYClient]:
    params = [f"token={token}"] if token else []
    if query:
        params.append(query.lstrip("?"))
    url = f"{ws_base}/{notebook_id}" + (f"?{'&'.join(params)}" if params else "")
    async with connect(url, max_size=None, compression=None) as ws, anyio.create_task_group() as tg:
        client = PyYClient(ws)
        tg.start_soon(client.run)
        if sync:
            await ws.send(protocol.create_sync_step1_message(client.doc.get_state()))
            with anyio.fail_after(10):
                await client.synced.wait()
        yield client
        tg.cancel_scope.cancel()
