"""Brute-force protection for logins, shared by every node through PostgreSQL.

Failures are counted per account and per address within a window: past the first threshold
each attempt on the account waits longer (doubling, capped), past the second the account is
locked until old failures leave the window. A success clears the account's count.
"""

from __future__ import annotations

import logging

import anyio
import asyncpg

from collab.errors import TooManyRequests
from collab.settings import Settings

log = logging.getLogger(__name__)

MAX_DELAY = 8.0


class LoginThrottle:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings

    async def before(self, account: str, address: str) -> None:
        """Wait or refuse before a login attempt is even checked."""
        s = self._settings
        row = await self._pool.fetchrow(
            "SELECT count(*) FILTER (WHERE key = $1) AS account,"
            " count(*) FILTER (WHERE key = $2) AS address,"
            " extract(epoch FROM min(at) FILTER (WHERE key = $1) + make_interval(secs => $3)"
            "   - now()) AS account_wait,"
            " extract(epoch FROM min(at) FILTER (WHERE key = $2) + make_interval(secs => $3)"
            "   - now()) AS address_wait"
            " FROM login_failures WHERE key IN ($1, $2) AND at > now() - make_interval(secs => $3)",
            _account_key(account),
            _address_key(address),
            s.login_window_seconds,
        )
        failures = int(row["account"])
        if failures >= s.login_lock_after:
            wait = max(1.0, float(row["account_wait"] or 0))
            log.warning("login refused: account locked", extra={"failures": failures})
            raise TooManyRequests(
                f"too many failed logins for this account; try again in {int(wait) + 1} s", wait
            )
        if int(row["address"]) >= s.login_address_limit:
            wait = max(1.0, float(row["address_wait"] or 0))
            log.warning("login refused: address limited", extra={"address": address})
            raise TooManyRequests(
                f"too many failed logins from this address; try again in {int(wait) + 1} s", wait
            )
        if failures >= s.login_slow_after:
            await anyio.sleep(min(MAX_DELAY, 0.25 * 2 ** (failures - s.login_slow_after)))

    async def failed(self, account: str, address: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO login_failures (key) VALUES ($1), ($2)",
                _account_key(account),
                _address_key(address),
            )
            # Keep the table small: failures past the window no longer count.
            await conn.execute(
                "DELETE FROM login_failures WHERE at < now() - make_interval(secs => $1)",
                self._settings.login_window_seconds,
            )

    async def succeeded(self, account: str) -> None:
        await self._pool.execute("DELETE FROM login_failures WHERE key = $1", _account_key(account))


def _account_key(email: str) -> str:
    return "account:" + email.lower()


def _address_key(address: str) -> str:
    return "address:" + address
