"""Share links: a role on a workspace or one notebook, handed over as an unguessable token.

Only the token's hash is stored; the token itself is shown once, when the link is made.
Opening a link signed in makes the caller a member (or gives them the notebook); signed
out, it makes a named guest whose session is confined to the link and ends with it.
Revoking a link ends what it granted and closes the sockets that relied on it.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from collab.auth.access import Principal, Role
from collab.auth.access_watch import AccessHooks
from collab.auth.accounts import Accounts, Identity, user_json
from collab.auth.credentials import new_token, token_hash
from collab.errors import BadRequest, Forbidden, Gone, NotFound

log = logging.getLogger(__name__)

MAX_EXPIRES_IN = 365 * 24 * 3600


def _link_json(record: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(record["id"]),
        "workspace_id": str(record["workspace_id"]),
        "notebook_id": str(record["notebook_id"]) if record["notebook_id"] else None,
        "role": record["role"],
        "created_by": str(record["created_by"]),
        "created_at": record["created_at"].isoformat(),
        "expires_at": record["expires_at"].isoformat() if record["expires_at"] else None,
        "max_uses": record["max_uses"],
        "uses": record["uses"],
        "revoked": record["revoked_at"] is not None,
    }


def _positive(value: object, name: str, limit: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= limit:
        raise BadRequest(f"'{name}' must be a whole number from 1 to {limit}")
    return value


class Links:
    def __init__(self, pool: asyncpg.Pool, accounts: Accounts, access: AccessHooks) -> None:
        self._pool = pool
        self._accounts = accounts
        self._access = access

    async def create(
        self,
        principal: Principal,
        workspace_id: uuid.UUID,
        role: Role,
        notebook_id: uuid.UUID | None,
        expires_in: object,
        max_uses: object,
    ) -> tuple[dict[str, Any], str]:
        if role > principal.role:
            mine = principal.role.label
            raise Forbidden(f"you cannot share a {role.label} role: yours is {mine}")
        seconds = _positive(expires_in, "expires_in", MAX_EXPIRES_IN)
        uses = _positive(max_uses, "max_uses", 1_000_000)
        if notebook_id is not None:
            found = await self._pool.fetchval(
                "SELECT 1 FROM notebooks WHERE id = $1 AND workspace_id = $2",
                notebook_id,
                workspace_id,
            )
            if not found:
                raise NotFound(f"no notebook {notebook_id} in workspace {workspace_id}")
        token = new_token("link")
        expires_at = datetime.now(UTC) + timedelta(seconds=seconds) if seconds else None
        record = await self._pool.fetchrow(
            "INSERT INTO share_links (id, token_hash, workspace_id, notebook_id, role, created_by,"
            " expires_at, max_uses) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
            uuid.uuid4(),
            token_hash(token),
            workspace_id,
            notebook_id,
            role.label,
            principal.user_id,
            expires_at,
            uses,
        )
        log.info(
            "share link created",
            extra={"user_id": str(principal.user_id), "link_id": str(record["id"])},
        )
        return _link_json(record), token

    async def list(self, workspace_id: uuid.UUID) -> list[dict[str, Any]]:
        records = await self._pool.fetch(
            "SELECT * FROM share_links WHERE workspace_id = $1 AND revoked_at IS NULL"
            " ORDER BY created_at",
            workspace_id,
        )
        return [_link_json(r) for r in records]

    async def workspace_of(self, link_id: uuid.UUID) -> asyncpg.Record:
        record = await self._pool.fetchrow("SELECT * FROM share_links WHERE id = $1", link_id)
        if record is None:
            raise NotFound(f"no share link {link_id}")
        return record

    async def revoke(self, link_id: uuid.UUID) -> None:
        """End the link and everything it granted: guest sessions, memberships and notebook
        grants made through it. Sockets relying on them are closed
        (``AccessHooks.access_changed``)."""
        async with self._pool.acquire() as conn, conn.transaction():
            workspace_id = await conn.fetchval(
                "UPDATE share_links SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1"
                " RETURNING workspace_id",
                link_id,
            )
            if workspace_id is None:
                raise NotFound(f"no share link {link_id}")
            await conn.execute(
                "UPDATE credentials SET revoked_at = now() WHERE link_id = $1"
                " AND revoked_at IS NULL",
                link_id,
            )
            await conn.execute("DELETE FROM workspace_members WHERE via_link = $1", link_id)
            await conn.execute("DELETE FROM notebook_grants WHERE via_link = $1", link_id)
        log.info("share link revoked", extra={"link_id": str(link_id)})
        await self._access.access_changed(f"w:{workspace_id}")

    async def _usable(self, conn: asyncpg.Connection, token: str) -> asyncpg.Record:
        record = await conn.fetchrow(
            "SELECT l.*, w.name AS workspace_name, n.title AS notebook_title"
            " FROM share_links l JOIN workspaces w ON w.id = l.workspace_id"
            " LEFT JOIN notebooks n ON n.id = l.notebook_id WHERE l.token_hash = $1",
            token_hash(token),
        )
        if record is None:
            raise NotFound("no such share link; ask for a new one")
        if record["revoked_at"] is not None:
            raise Gone("this share link was revoked; ask for a new one")
        if record["expires_at"] is not None and record["expires_at"] <= datetime.now(UTC):
            raise Gone("this share link has expired; ask for a new one")
        if record["max_uses"] is not None and record["uses"] >= record["max_uses"]:
            raise Gone("this share link has been used up; ask for a new one")
        return record

    async def preview(self, token: str) -> dict[str, Any]:
        """What a link gives, for the page that asks whether to accept it."""
        async with self._pool.acquire() as conn:
            record = await self._usable(conn, token)
        return {
            "workspace_id": str(record["workspace_id"]),
            "workspace_name": record["workspace_name"],
            "notebook_id": str(record["notebook_id"]) if record["notebook_id"] else None,
            "notebook_title": record["notebook_title"],
            "role": record["role"],
        }

    async def accept(
        self, token: str, identity: Identity | None, bearer: str | None, guest_name: object
    ) -> dict[str, Any]:
        """Use the link: as a member if signed in with an account, else as a new guest."""
        async with self._pool.acquire() as conn, conn.transaction():
            link = await self._usable(conn, token)
            # Count the use atomically: two people racing for the last use cannot both win.
            counted = await conn.fetchval(
                "UPDATE share_links SET uses = uses + 1 WHERE id = $1"
                " AND (max_uses IS NULL OR uses < max_uses) RETURNING uses",
                link["id"],
            )
            if counted is None:
                raise Gone("this share link has been used up; ask for a new one")
            if identity is not None and not identity.guest:
                await self._grant(conn, link, identity.user_id)
                user = user_json(identity)
                session = bearer
            else:
                user, session = await self._accounts.create_guest(
                    guest_name, link["id"], link["expires_at"]
                )
        log.info(
            "share link accepted",
            extra={"link_id": str(link["id"]), "user_id": user["id"], "guest": user["guest"]},
        )
        return {
            "token": session,
            "user": user,
            "guest": user["guest"],
            "role": link["role"],
            "workspace_id": str(link["workspace_id"]),
            "notebook_id": str(link["notebook_id"]) if link["notebook_id"] else None,
        }

    async def _grant(
        self, conn: asyncpg.Connection, link: asyncpg.Record, user_id: uuid.UUID
    ) -> None:
        # Never lower a role someone already has; remember the link only when it raised it.
        order = "CASE {r} WHEN 'owner' THEN 3 WHEN 'editor' THEN 2 ELSE 1 END"
        if link["notebook_id"] is None:
            table, key = "workspace_members", "workspace_id"
            target = link["workspace_id"]
        else:
            table, key = "notebook_grants", "notebook_id"
            target = link["notebook_id"]
        await conn.execute(
            f"INSERT INTO {table} AS t ({key}, user_id, role, via_link) VALUES ($1, $2, $3, $4)"
            f" ON CONFLICT ({key}, user_id) DO UPDATE SET role = EXCLUDED.role,"
            " via_link = EXCLUDED.via_link"
            f" WHERE {order.format(r='t.role')} < {order.format(r='EXCLUDED.role')}",
            target,
            user_id,
            link["role"],
            link["id"],
        )
