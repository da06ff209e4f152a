"""Brute-force protection for logins, shared by every node through PostgreSQL.

An attempt is counted before its password is checked, against two keys:

- its **address** (an IPv6 address by its /64): past ``login_address_limit`` failures within
  the window, that address is refused whatever account it tries;
- the **account, from where it comes**: a source the account signed in from before (the
  browser's device cookie, else the address) keeps a count of its own, and every other
  source shares one. Past ``login_slow_after`` failures an attempt waits (doubling, capped),
  past ``login_lock_after`` it is refused until old failures leave the window.

So a stranger's guesses lock out the strangers, never the owner's own browser or address.
A success takes its attempt's rows back, clears its own source's count, and makes the
address and browser known (for ``login_known_days``).

Checking is one at a time per account and source on each node (the others wait their turn
without holding a database connection), and the count is taken under an advisory lock
before the check, so however many attempts arrive at once, on however many nodes, no more
than ``login_lock_after`` passwords are ever checked per window.

>>> record = await throttle.attempt(email, LoginSource(address, device), check_password)
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import asyncpg

from collab.errors import TooManyRequests
from collab.settings import Settings

log = logging.getLogger(__name__)

MAX_DELAY = 8.0
DEVICE_PREFIX = "wfd_"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LoginSource:
    """Where a login comes from: the client's address and the browser's device token."""

    address: str
    device: str | None = None


def address_key(address: str) -> str:
    """An address as the limits count it: IPv6 by its /64 (one host has them all)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _sources(source: LoginSource) -> list[str]:
    """The source keys of a login, the most specific first."""
    keys = []
    if source.device and source.device.startswith(DEVICE_PREFIX) and len(source.device) < 100:
        keys.append("device:" + hashlib.sha256(source.device.encode()).hexdigest())
    keys.append("address:" + address_key(source.address))
    return keys


@dataclass
class _Turn:
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    waiting: int = 0


class LoginThrottle:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._turns: dict[str, _Turn] = {}

    async def attempt(
        self, account: str, source: LoginSource, check: Callable[[], Awaitable[T | None]]
    ) -> T | None:
        """Count the attempt, wait its turn (and any slow-down), then ``check()`` the
        password: its result, or None when it failed (the attempt stays counted). Raises
        TooManyRequests without checking when the address or the account is locked."""
        known = await self._known_source(account, source)
        bucket = f"known:{account}|{known}" if known else f"account:{account}"
        address = "address:" + address_key(source.address)
        # A known browser is its owner's, even behind an address others abuse.
        ids, failures = await self._reserve(
            bucket, address, limit_address=not (known or "").startswith("device:")
        )
        async with self._turn(bucket):
            if failures >= self._settings.login_slow_after:
                exponent = failures - self._settings.login_slow_after
                await anyio.sleep(min(MAX_DELAY, 0.25 * 2**exponent))
            result = await check()
        if result is not None:
            await self._succeeded(account, source, ids, bucket if known else None)
        return result

    async def remember(self, account: str, source: LoginSource) -> None:
        """Make this address and browser known for the account (after a sign-up)."""
        async with self._pool.acquire() as conn:
            await self._remember(conn, account, source)

    # -- internals -----------------------------------------------------------------------

    async def _known_source(self, account: str, source: LoginSource) -> str | None:
        candidates = _sources(source)
        rows = await self._pool.fetch(
            "SELECT source FROM login_known WHERE account = $1 AND source = ANY($2::text[])"
            " AND seen_at > now() - make_interval(secs => $3)",
            account,
            candidates,
            self._settings.login_known_days * 86400,
        )
        found = {r["source"] for r in rows}
        return next((c for c in candidates if c in found), None)

    async def _reserve(
        self, bucket: str, address: str, *, limit_address: bool
    ) -> tuple[list[int], int]:
        """Count this attempt as a failure now, unless a limit is already reached: (its
        rows, the account source's failures before it)."""
        s = self._settings
        async with self._pool.acquire() as conn, conn.transaction():
            # Count and insert atomically across nodes; always in the same order.
            for key in sorted({bucket, address}):
                await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE key = $1) AS bucket,"
                " count(*) FILTER (WHERE key = $2) AS address,"
                " extract(epoch FROM min(at) FILTER (WHERE key = $1)"
                "   + make_interval(secs => $3) - now()) AS bucket_wait,"
                " extract(epoch FROM min(at) FILTER (WHERE key = $2)"
                "   + make_interval(secs => $3) - now()) AS address_wait"
                " FROM login_failures WHERE key IN ($1, $2)"
                " AND at > now() - make_interval(secs => $3)",
                bucket,
                address,
                s.login_window_seconds,
            )
            if limit_address and int(row["address"]) >= s.login_address_limit:
                wait = max(1.0, float(row["address_wait"] or 0))
                log.warning("login refused: address limited", extra={"address": address})
                raise TooManyRequests(
                    f"too many failed logins from this address; try again in {int(wait) + 1} s",
                    wait,
                )
            failures = int(row["bucket"])
            if failures >= s.login_lock_after:
                wait = max(1.0, float(row["bucket_wait"] or 0))
                log.warning("login refused: account locked", extra={"failures": failures})
                raise TooManyRequests(
                    f"too many failed logins for this account; try again in {int(wait) + 1} s",
                    wait,
                )
            ids = await conn.fetch(
                "INSERT INTO login_failures (key) VALUES ($1), ($2) RETURNING id", bucket, address
            )
            # Keep the table small: failures past the window no longer count.
            await conn.execute(
                "DELETE FROM login_failures WHERE at < now() - make_interval(secs => $1)",
                s.login_window_seconds,
            )
        return [r["id"] for r in ids], failures

    @contextlib.asynccontextmanager
    async def _turn(self, bucket: str) -> AsyncIterator[None]:
        """One check at a time per account and source on this node."""
        turn = self._turns.setdefault(bucket, _Turn())
        turn.waiting += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.waiting -= 1
            if turn.waiting == 0:
                del self._turns[bucket]

    async def _succeeded(
        self, account: str, source: LoginSource, ids: list[int], known_bucket: str | None
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            # This attempt was no failure; a known source starts afresh. Failures from
            # unknown sources stay: they may be someone else's.
            await conn.execute("DELETE FROM login_failures WHERE id = ANY($1::bigint[])", ids)
            if known_bucket is not None:
                await conn.execute("DELETE FROM login_failures WHERE key = $1", known_bucket)
            await self._remember(conn, account, source)

    async def _remember(self, conn: asyncpg.Connection, account: str, source: LoginSource) -> None:
        await conn.execute(
            "INSERT INTO login_known (account, source) SELECT $1, unnest($2::text[])"
            " ON CONFLICT (account, source) DO UPDATE SET seen_at = now()",
            account,
            _sources(source),
        )
        await conn.execute(
            "DELETE FROM login_known WHERE seen_at < now() - make_interval(secs => $1)",
            self._settings.login_known_days * 86400,
        )
