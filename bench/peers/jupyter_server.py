"""Jupyter's collaboration stack as a bench peer: pycrdt-websocket + pycrdt-store's SQLiteYStore
on uvicorn, set up the way jupyter-collaboration sets them up.

Run by bench/peers.py inside its own venv (bench/.peers/jupyter), never imported by Weft:

    python bench/peers/jupyter_server.py --port 8765 --db /tmp/x/ystore.db

What jupyter-collaboration does and this does too (jupyter_server_ydoc/app.py, rooms.py,
stores.py): one `WebsocketServer(rooms_ready=False, auto_clean_rooms=False)`; a room per
document, created not ready, with its own `SQLiteYStore` (one shared database file,
`document_ttl` unset, the store's defaults otherwise); the room is filled from the store's
updates before it is marked ready, so loading is not written back; every update the room
applies is broadcast to the other clients and appended to the store (the store write is a
task started after the broadcast: persistence does not delay the fan-out). What it leaves
out: the notebook file on disk and its debounced save (jupyter_ydoc), the file-id service
and authentication: a bench talks Yjs only. The room name is the WebSocket path.

`GET /` answers 200 (readiness); `GET /rooms` the loaded rooms and their clients.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

import uvicorn
from pycrdt.store import SQLiteYStore, YDocNotFound
from pycrdt.websocket import ASGIServer, WebsocketServer, YRoom


class Server(WebsocketServer):
    def __init__(self, db_path: str) -> None:
        super().__init__(rooms_ready=False, auto_clean_rooms=False, log=logging.getLogger("peer"))
        self.db_path = db_path

    async def get_room(self, name: str) -> YRoom:
        if name not in self.rooms:
            store = SQLiteYStore(path=name, log=self.log)
            store.db_path = self.db_path
            room = YRoom(ready=False, ystore=store, log=self.log)
            self.rooms[name] = room
            await self.start_room(room)
            await store.started.wait()  # the room starts its store (in its own task group)
            try:
                await store.apply_updates(room.ydoc)
            except YDocNotFound:
                pass
            room.ready = True
        room = self.rooms[name]
        await self.start_room(room)
        await room.ready_event.wait()  # a second client during the load waits for it
        return room


def make_app(server: Server) -> Any:
    ws_app = ASGIServer(server)
    started = False

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal started
        if scope["type"] == "lifespan":
            message = await receive()  # lifespan.startup
            async with server:  # its task group lives as long as the app
                started = True
                await send({"type": "lifespan.startup.complete"})
                while message["type"] != "lifespan.shutdown":
                    message = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "websocket":
            await ws_app(scope, receive, send)
            return
        if scope["path"] == "/rooms":
            body = json.dumps({n: len(r.clients) for n, r in server.rooms.items()}).encode()
        else:
            body = b"ok"
        await send(
            {
                "type": "http.response.start",
                "status": 200 if started else 503,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True, help="the SQLite YStore file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    server = Server(args.db)
    uvicorn.run(
        make_app(server),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        ws_max_size=64 * 1024 * 1024,
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
