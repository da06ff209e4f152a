"""A real HTTP server on 127.0.0.1 that speaks OpenAI's chat-completions API, for tests.

It streams Server-Sent Events the way the API does (``chat.completion.chunk`` objects with
``choices[0].delta.content``, a last chunk with ``finish_reason``, then ``data: [DONE]``,
over chunked transfer encoding), answers errors with the API's JSON error bodies, records
every request it gets, and answers each from a script the test sets:

>>> with FakeOpenAI() as fake:
...     fake.script(stream("import pandas", " as pd\\n", delay=0.05), error(429))
...     # start Weft with OPENAI_BASE_URL=fake.base_url ...
...     fake.requests[0]["body"]["messages"]

A scripted stream can pause at a ``Gate`` until the test opens it, stall, or drop the
connection part way. A request with nothing left in the script gets a 500 saying so.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio


class Gate:
    """A point in a stream where the server waits until the test calls ``open()``;
    ``await gate.reached()`` waits until the stream got there."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._reached = threading.Event()

    def open(self) -> None:
        self._open.set()

    async def reached(self, timeout: float = 15) -> None:
        with anyio.fail_after(timeout):
            while not self._reached.is_set():
                await anyio.sleep(0.01)

    def _wait(self, limit: float = 60) -> None:
        self._reached.set()
        self._open.wait(limit)


@dataclass
class Reply:
    """One scripted answer. ``steps`` are content pieces (str) and Gates, in order."""

    steps: list[str | Gate] = field(default_factory=list)
    status: int = 200
    error_body: dict[str, Any] | None = None
    delay: float = 0.0  # between two pieces
    first_delay: float = 0.0  # before the response headers
    drop: bool = False  # cut the connection after the steps, with no [DONE]
    finish_reason: str = "stop"
    usage: dict[str, int] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def stream(
    *steps: str | Gate,
    delay: float = 0.0,
    first_delay: float = 0.0,
    finish_reason: str = "stop",
    usage: dict[str, int] | None = None,
) -> Reply:
    return Reply(
        list(steps),
        delay=delay,
        first_delay=first_delay,
        finish_reason=finish_reason,
        usage=usage,
    )


def dropped(*steps: str | Gate, delay: float = 0.0) -> Reply:
    """Stream ``steps``, then close the connection without finishing the response."""
    return Reply(list(steps), delay=delay, drop=True)


_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again in 20s.",
    ),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def error(status: int, message: str | None = None) -> Reply:
    kind, code, default = _ERRORS.get(status, ("server_error", None, "Error."))
    body = {"error": {"message": message or default, "type": kind, "param": None, "code": code}}
    headers = {"retry-after": "1"} if status == 429 else {}
    return Reply(status=status, error_body=body, headers=headers)


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.sent: list[str] = []  # every content piece streamed, in order
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
                else:
                    self._json(
                        404, {"error": {"message": "not found", "type": "invalid_request_error"}}
                    )

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with fake._lock:
                    fake.requests.append(
                        {"path": self.path, "headers": dict(self.headers.items()), "body": body}
                    )
                    reply = fake._script.popleft() if fake._script else None
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._json(
                        404, {"error": {"message": "unknown path", "type": "invalid_request_error"}}
                    )
                    return
                if reply is None:
                    self._json(
                        500,
                        {"error": {"message": "no scripted reply left", "type": "server_error"}},
                    )
                    return
                if reply.first_delay:
                    time.sleep(reply.first_delay)
                if reply.status != 200:
                    self._json(reply.status, reply.error_body or {}, reply.headers)
                    return
                model = str((body or {}).get("model", "fake"))
                if (body or {}).get("stream"):
                    self._stream(reply, model)
                else:
                    text = "".join(s for s in reply.steps if isinstance(s, str))
                    self._json(
                        200,
                        {
                            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                            "object": "chat.completion",
                            "created": int(time.time()),
                            "model": model,
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": text},
                                    "logprobs": None,
                                    "finish_reason": reply.finish_reason,
                                }
                            ],
                            "usage": reply.usage
                            or {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                        },
                    )

            def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _event(self, payload: Any) -> None:
                text = payload if isinstance(payload, str) else json.dumps(payload)
                self._chunk(f"data: {text}\n\n".encode())

            def _stream(self, reply: Reply, model: str) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream; charset=utf-8")
                self.send_header("transfer-encoding", "chunked")
                self.send_header("cache-control", "no-cache")
                self.end_headers()
                base = {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": model,
                    "system_fingerprint": "fp_fake",
                }

                def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                    return {
                        **base,
                        "choices": [
                            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                        ],
                    }

                try:
                    self._event(chunk({"role": "assistant", "content": "", "refusal": None}))
                    first = True
                    for step in reply.steps:
                        if isinstance(step, Gate):
                            step._wait()
                            continue
                        if reply.delay and not first:
                            time.sleep(reply.delay)
                        first = False
                        self._event(chunk({"content": step}))
                        with fake._lock:
                            fake.sent.append(step)
                    if reply.drop:
                        # As a proxy or a crashed server does: the body just stops.
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    self._event(chunk({}, reply.finish_reason))
                    if reply.usage is not None:
                        self._event({**base, "choices": [], "usage": reply.usage})
                    self._event("[DONE]")
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, OSError):
                    # The client went away (a cancel): stop like the real API does.
                    self.close_connection = True

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that went away (cancel, timeout) is part of the tests, not news.
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r["body"] for r in self.requests if r["path"].endswith("/chat/completions")]

    async def wait_requests(self, count: int, timeout: float = 15) -> None:
        with anyio.fail_after(timeout):
            while len(self.bodies()) < count:
                await anyio.sleep(0.01)

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
