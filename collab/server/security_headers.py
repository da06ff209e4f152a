"""Security headers on every HTTP response the server sends (pages, assets, API, errors).

Two Content-Security-Policies (docs/security.md, "Outputs and the browser"):

- ``APP_POLICY``, for everything but the output frame: scripts and styles only from this
  server (no inline script, no eval; inline *styles* are allowed because CodeMirror, KaTeX
  and vega-embed inject them), fetches and WebSockets only to this server, images from it or
  ``data:``/``blob:``, frames only from it, and no page may frame it.
- ``FRAME_POLICY``, for ``/frame.html``, the page inside every output frame (charts and HTML
  from documents): forced into a sandbox (an opaque origin, whatever frames it), inline
  scripts allowed there (HTML outputs are made of them), no fetch or WebSocket at all,
  images and fonts only from ``data:``/``blob:``, framed only by this server's pages.

Hashed client assets answer ``Access-Control-Allow-Origin: *``: the frame's origin is
opaque, so its module scripts are cross-origin loads (no credentials, public files).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

APP_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "frame-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

FRAME_PAGE = "/frame.html"
FRAME_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src data: blob:",
        "font-src data:",
        "media-src data: blob:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'self'",
        "sandbox allow-scripts allow-popups allow-downloads",
    ]
)

COMMON = {
    "X-Content-Type-Options": "nosniff",
    # Same-origin requests keep their Referer (and a form's Origin); other sites get none,
    # so a share link's token in the address never leaves with a click.
    "Referrer-Policy": "same-origin",
}


def headers_for(path: str) -> dict[str, str]:
    """The security headers of a response to ``path``."""
    if path == FRAME_PAGE:
        return {**COMMON, "Content-Security-Policy": FRAME_POLICY, "X-Frame-Options": "SAMEORIGIN"}
    headers = {**COMMON, "Content-Security-Policy": APP_POLICY, "X-Frame-Options": "DENY"}
    if path.startswith("/assets/"):
        headers["Access-Control-Allow-Origin"] = "*"
    return headers


class SecurityHeaders:
    """ASGI middleware: sets :func:`headers_for` on every HTTP response (and on a WebSocket
    handshake refused with an HTTP response). An exception that escapes the app before it
    answered gets a bare 500 with the headers here (then goes on to be logged), so even a
    crash's answer carries them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        extra = headers_for(scope.get("path", ""))
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                started = True
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if scope["type"] == "http" and not started:
                body = b"Internal Server Error"
                await send_with_headers(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
            raise
