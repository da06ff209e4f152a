"""Take access away from open sockets, on every node, as soon as it is taken away.

A change that can reduce someone's access (a revoked link or token, a removed member, a
changed role, a logout) is announced with ``NOTIFY weft_access`` ("w:<workspace id>" or
"c:<credential id>"). Each node checks its open sockets in that scope again and closes the
ones whose credential or role no longer holds: 4401 when the credential is gone, 4403 when
the role changed (the client reconnects with its new role) or was removed.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import asyncpg

from collab.auth.access import Role, notebook_role
from collab.auth.accounts import Accounts
from collab.background import BackgroundService
from collab.close_codes import CloseCode
from collab.errors import NotFound
from collab.storage.database import DATABASE_ERRORS

log = logging.getLogger(__name__)

CHANNEL = "weft_access"
_RETRY_SECONDS = 1.0


class Watched(Protocol):
    """What a socket tells the watcher about itself (collab.sync.websocket.Connection)."""

    notebook_id: uuid.UUID
    workspace_id: uuid.UUID
    credential_digest: bytes
    credential_id: uuid.UUID
    role: Role

    def revoke(self, code: CloseCode, reason: str) -> None: ...


@dataclass
class LiveSockets:
    """The sockets open on this node, for the watcher to check again."""

    sockets: set[Watched] = field(default_factory=set)

    def add(self, socket: Watched) -> None:
        self.sockets.add(socket)

    def discard(self, socket: Watched) -> None:
        self.sockets.discard(socket)

    def matching(self, scope: str) -> list[Watched]:
        kind, _, raw = scope.partition(":")
        if kind == "*":
            return list(self.sockets)
        try:
            value = uuid.UUID(raw)
        except ValueError:
            return []
        if kind == "w":
            return [s for s in self.sockets if s.workspace_id == value]
        if kind == "c":
            return [s for s in self.sockets if s.credential_id == value]
        return []


class AccessHooks(Protocol):
    """Told of every change that can take access away (collab.auth.members, links, the
    logout and token handlers). ``AccessWatch`` announces it to every node."""

    async def access_changed(self, scope: str) -> None:
        """Access in ``scope`` ("w:<workspace id>" or "c:<credential id>") may have shrunk."""


class AccessWatch(BackgroundService):
    """Closes this node's sockets whose access was taken away anywhere in the cluster; its
    ``access_changed`` (``AccessHooks``) tells every node, this one included.

    >>> async with AccessWatch(pool, accounts, sockets) as watch:
    ...     await watch.access_changed(f"w:{workspace_id}")  # every node checks its sockets
    """

    name = "access-watch"

    def __init__(self, pool: asyncpg.Pool, accounts: Accounts, sockets: LiveSockets) -> None:
        self._pool = pool
        self._accounts = accounts
        self._sockets = sockets
        self._send, self._receive = anyio.create_memory_object_stream[str](1024)

    async def start(self) -> None:
        self.loop(self._listen)
        self.loop(self._check_loop)

    async def access_changed(self, scope: str) -> None:
        await self._pool.execute("SELECT pg_notify($1, $2)", CHANNEL, scope)

    async def _listen(self) -> None:
        while True:
            try:
                conn = await self._pool.acquire()
            except DATABASE_ERRORS:
                await anyio.sleep(_RETRY_SECONDS)
                continue
            try:
                lost = anyio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._notified)
                # Anything announced while we were not listening: check everything.
                self._send.send_nowait("*:")
                await lost.wait()
            except DATABASE_ERRORS:
                pass
            finally:
                # Shielded: on shutdown the cancellation must not skip the release, or the
                # pool waits for this connection before it can close.
                with anyio.CancelScope(shield=True):
                    with contextlib.suppress(Exception):
                        await conn.remove_listener(CHANNEL, self._notified)
                    with contextlib.suppress(Exception):
                        await self._pool.release(conn)
            await anyio.sleep(_RETRY_SECONDS)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(anyio.WouldBlock):
            self._send.send_nowait(payload)

    async def _check_loop(self) -> None:
        async for scope in self._receive:
            for socket in self._sockets.matching(scope):
                try:
                    await self.check(socket)
                except DATABASE_ERRORS as exc:
                    log.warning("access check failed: %s", exc)

    async def check(self, socket: Watched) -> None:
        identity = await self._accounts.resolve_hash(socket.credential_digest)
        extra = {"notebook_id": str(socket.notebook_id)}
        if identity is None:
            log.info("socket closed: credential revoked", extra=extra)
            socket.revoke(CloseCode.UNAUTHORIZED, "credential revoked or expired; sign in again")
            return
        try:
            _, role = await notebook_role(self._pool, identity, socket.notebook_id)
        except NotFound:
            role = None
        extra["user_id"] = str(identity.user_id)
        if role is None:
            log.info("socket closed: access revoked", extra=extra)
            socket.revoke(CloseCode.FORBIDDEN, "access revoked")
        elif role != socket.role:
            log.info("socket closed: role changed", extra={**extra, "role": role.label})
            socket.revoke(CloseCode.FORBIDDEN, f"role changed to {role.label}; reconnect")
