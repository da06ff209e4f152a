"""People and their credentials: sign-up, login, sessions, API tokens and guests.

A credential is a bearer token (cookie, header or ``?token=``); resolving one gives an
``Identity``: who this is, and for a guest, the share link that confines them. A socket
ticket (``?ticket=``) stands for the credential that asked for it, on one notebook, for a
few minutes.

>>> user, token = await accounts.signup("ada@example.org", "a long passphrase", "Ada",
...                                     source=LoginSource(address))
>>> identity = await accounts.resolve(token)
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from collab.auth.credentials import Passwords, check_password_rules, new_token, token_hash
from collab.auth.login_throttle import LoginSource, LoginThrottle
from collab.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from collab.settings import Settings
from collab.storage.catalog import clean_name

log = logging.getLogger(__name__)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: uuid.UUID
    name: str
    email: str | None
    guest: bool
    credential_id: uuid.UUID
    kind: str  # session | api | guest
    # A guest's share link: their whole scope.
    link_id: uuid.UUID | None


def clean_email(value: object) -> str:
    if not isinstance(value, str) or not _EMAIL.match(value.strip()) or len(value) > 320:
        raise BadRequest("'email' must be an email address")
    return value.strip().lower()


def user_json(record: asyncpg.Record | Identity) -> dict[str, Any]:
    if isinstance(record, Identity):
        return {
            "id": str(record.user_id),
            "email": record.email,
            "name": record.name,
            "guest": record.guest,
        }
    return {
        "id": str(record["id"]),
        "email": record["email"],
        "name": record["name"],
        "guest": record["guest"],
    }


class Accounts:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._passwords = Passwords()
        self.throttle = LoginThrottle(pool, settings)

    # -- signing up and in ----------------------------------------------------------

    async def signup(
        self,
        email: object,
        password: object,
        name: object,
        *,
        source: LoginSource,
        link_token: str | None = None,
    ) -> tuple[dict[str, Any], str]:
        address = clean_email(email)
        secret = check_password_rules(password)
        display = clean_name(name, "name")
        hashed = await self._passwords.hash(secret)
        user_id = uuid.uuid4()
        async with self._pool.acquire() as conn, conn.transaction():
            if self._settings.signup == "invite" and not await self._invited(
                conn, address, link_token
            ):
                raise Forbidden(
                    "this server is invite-only: sign up from a share link or ask a workspace"
                    " owner to invite this address"
                )
            try:
                record = await conn.fetchrow(
                    "INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, $4)"
                    " RETURNING *",
                    user_id,
                    address,
                    display,
                    hashed,
                )
            except asyncpg.UniqueViolationError:
                raise Conflict("an account with this email already exists; log in") from None
            # Invitations to this address become memberships now.
            await conn.execute(
                "INSERT INTO workspace_members (workspace_id, user_id, role)"
                " SELECT workspace_id, $1, role FROM invitations WHERE lower(email) = $2"
                " ON CONFLICT DO NOTHING",
                user_id,
                address,
            )
            await conn.execute("DELETE FROM invitations WHERE lower(email) = $1", address)
            token, _ = await self._issue(conn, user_id, "session", self._session_expiry())
        # Where the account was made is where its owner is: known from the start.
        await self.throttle.remember(address, source)
        log.info("signed up", extra={"user_id": str(user_id)})
        return user_json(record), token

    async def _invited(self, conn: asyncpg.Connection, email: str, link_token: str | None) -> bool:
        # The first account of a new server needs no invitation: someone has to start.
        if not await conn.fetchval("SELECT 1 FROM users WHERE NOT guest LIMIT 1"):
            return True
        if await conn.fetchval("SELECT 1 FROM invitations WHERE lower(email) = $1", email):
            return True
        if not link_token:
            return False
        return bool(
            await conn.fetchval(
                "SELECT 1 FROM share_links WHERE token_hash = $1 AND revoked_at IS NULL"
                " AND (expires_at IS NULL OR expires_at > now())"
                " AND (max_uses IS NULL OR uses < max_uses)",
                token_hash(link_token),
            )
        )

    async def login(
        self, email: object, password: object, source: LoginSource
    ) -> tuple[dict[str, Any], str]:
        if not isinstance(email, str) or not isinstance(password, str):
            raise BadRequest("'email' and 'password' are required strings")
        account = email.strip().lower()

        async def check() -> asyncpg.Record | None:
            record = await self._pool.fetchrow(
                "SELECT * FROM users WHERE lower(email) = $1 AND NOT guest", account
            )
            stored = record["password_hash"] if record is not None else None
            verified = await self._passwords.verify(stored, password[:1024])
            return record if verified and record is not None else None

        # Counted before the password is checked; refused (429) without checking it when
        # this account is locked for this source, or this address for every account.
        record = await self.throttle.attempt(account, source, check)
        if record is None:
            log.warning("login failed", extra={"address": source.address})
            raise Unauthorized("wrong email or password")
        async with self._pool.acquire() as conn:
            token, _ = await self._issue(conn, record["id"], "session", self._session_expiry())
        log.info("logged in", extra={"user_id": str(record["id"])})
        return user_json(record), token

    async def create_guest(
        self, name: object, link_id: uuid.UUID, expires_at: datetime | None
    ) -> tuple[dict[str, Any], str]:
        display = clean_name(name if name is not None else "Guest", "name")
        limit = self._now_plus(timedelta(days=self._settings.guest_days))
        expiry = min(expires_at, limit) if expires_at is not None else limit
        user_id = uuid.uuid4()
        async with self._pool.acquire() as conn, conn.transaction():
            record = await conn.fetchrow(
                "INSERT INTO users (id, name, guest) VALUES ($1, $2, true) RETURNING *",
                user_id,
                display,
            )
            token, _ = await self._issue(conn, user_id, "guest", expiry, link_id=link_id)
        return user_json(record), token

    # -- credentials ----------------------------------------------------------------

    def _now_plus(self, delta: timedelta) -> datetime:
        return datetime.now(UTC) + delta

    def _session_expiry(self) -> datetime:
        return self._now_plus(timedelta(days=self._settings.session_days))

    async def _issue(
        self,
        conn: asyncpg.Connection,
        user_id: uuid.UUID,
        kind: str,
        expires_at: datetime | None,
        *,
        label: str | None = None,
        link_id: uuid.UUID | None = None,
    ) -> tuple[str, asyncpg.Record]:
        """A new credential: the token (shown once) and its row."""
        token = new_token(kind)
        record = await conn.fetchrow(
            "INSERT INTO credentials (id, token_hash, user_id, kind, label, link_id, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, label, created_at, expires_at",
            uuid.uuid4(),
            token_hash(token),
            user_id,
            kind,
            label,
            link_id,
            expires_at,
        )
        return token, record

    async def resolve(self, token: str) -> Identity | None:
        """The identity a token stands for, or None if it is unknown, expired or revoked."""
        return await self.resolve_hash(token_hash(token))

    async def resolve_hash(self, digest: bytes) -> Identity | None:
        record = await self._pool.fetchrow(
            _IDENTITY + " WHERE c.token_hash = $1 AND" + _USABLE,
            digest,
        )
        return _identity(record) if record is not None else None

    # -- socket tickets --------------------------------------------------------------

    async def issue_ticket(
        self, identity: Identity, notebook_id: uuid.UUID
    ) -> tuple[str, datetime]:
        """A ticket opening sockets to one notebook as ``identity``'s credential, until it
        expires: reusable for reconnects meanwhile, worthless after. Only its hash is kept;
        it dies early with that credential (logout, revocation)."""
        ticket = new_token("ticket")
        expires_at = self._now_plus(timedelta(seconds=self._settings.socket_ticket_seconds))
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM socket_tickets WHERE expires_at < now()")
            await conn.execute(
                "INSERT INTO socket_tickets (token_hash, credential_id, notebook_id, expires_at)"
                " VALUES ($1, $2, $3, $4)",
                token_hash(ticket),
                identity.credential_id,
                notebook_id,
                expires_at,
            )
        return ticket, expires_at

    async def resolve_ticket(
        self, ticket: str, notebook_id: uuid.UUID | None
    ) -> tuple[Identity, bytes] | None:
        """(the identity, the digest of the credential that asked for the ticket), if the
        ticket is unexpired, for this notebook, and that credential still valid."""
        if notebook_id is None:
            return None
        record = await self._pool.fetchrow(
            _IDENTITY + " JOIN socket_tickets t ON t.credential_id = c.id"
            " WHERE t.token_hash = $1 AND t.notebook_id = $2 AND t.expires_at > now() AND"
            + _USABLE,
            token_hash(ticket),
            notebook_id,
        )
        if record is None:
            return None
        return _identity(record), bytes(record["token_hash"])

    async def rename(self, identity: Identity, name: object) -> dict[str, Any]:
        """Change the name others see (guests too); returns the account as user_json."""
        record = await self._pool.fetchrow(
            "UPDATE users SET name = $2 WHERE id = $1 RETURNING *",
            identity.user_id,
            clean_name(name, "name"),
        )
        if record is None:
            raise NotFound("the account is gone")
        log.info("renamed", extra={"user_id": str(identity.user_id)})
        return user_json(record)

    async def logout(self, identity: Identity) -> None:
        await self._pool.execute(
            "UPDATE credentials SET revoked_at = now() WHERE id = $1", identity.credential_id
        )
        log.info("logged out", extra={"user_id": str(identity.user_id)})

    async def create_api_token(
        self, identity: Identity, label: object, expires_in: object
    ) -> tuple[dict[str, Any], str]:
        name = clean_name(label if label is not None else "API token", "label")
        expires_at = None
        if expires_in is not None:
            if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
                raise BadRequest("'expires_in' must be a positive number of seconds")
            expires_at = self._now_plus(timedelta(seconds=expires_in))
        async with self._pool.acquire() as conn:
            token, record = await self._issue(conn, identity.user_id, "api", expires_at, label=name)
        return _token_json(record), token

    async def list_api_tokens(self, user_id: uuid.UUID) -> list[dict[str, Any]]:
        records = await self._pool.fetch(
            "SELECT id, label, created_at, expires_at FROM credentials"
            " WHERE user_id = $1 AND kind = 'api' AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > now()) ORDER BY created_at",
            user_id,
        )
        return [_token_json(r) for r in records]

    async def revoke_api_token(self, user_id: uuid.UUID, token_id: uuid.UUID) -> None:
        done = await self._pool.fetchval(
            "UPDATE credentials SET revoked_at = now() WHERE id = $1 AND user_id = $2"
            " AND kind = 'api' AND revoked_at IS NULL RETURNING id",
            token_id,
            user_id,
        )
        if done is None:
            raise NotFound(f"no API token {token_id}")


# Who a credential is, and the condition for it to be usable now.
_IDENTITY = (
    "SELECT c.id AS credential_id, c.kind, c.link_id, c.token_hash, u.id, u.name, u.email,"
    " u.guest FROM credentials c JOIN users u ON u.id = c.user_id"
    " LEFT JOIN share_links l ON l.id = c.link_id"
)
_USABLE = (
    " c.revoked_at IS NULL AND (c.expires_at IS NULL OR c.expires_at > now())"
    # A guest's session lasts as long as the link that made it.
    " AND (c.link_id IS NULL OR (l.revoked_at IS NULL"
    "      AND (l.expires_at IS NULL OR l.expires_at > now())))"
)


def _identity(record: asyncpg.Record) -> Identity:
    return Identity(
        user_id=record["id"],
        name=record["name"],
        email=record["email"],
        guest=record["guest"],
        credential_id=record["credential_id"],
        kind=record["kind"],
        link_id=record["link_id"],
    )


def _token_json(record: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(record["id"]),
        "label": record["label"],
        "created_at": record["created_at"].isoformat(),
        "expires_at": record["expires_at"].isoformat() if record["expires_at"] else None,
    }
