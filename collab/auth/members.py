"""Workspace membership: who holds which role, invitations, and the last-owner rule."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from collab.auth.access import Role
from collab.auth.access_watch import AccessHooks
from collab.errors import Conflict, NotFound


def _member_json(record: asyncpg.Record) -> dict[str, Any]:
    return {
        "user_id": str(record["user_id"]),
        "name": record["name"],
        "email": record["email"],
        "role": record["role"],
        "guest": False,
    }


class Members:
    """Reads and changes roles. Every change that can take access away announces it
    (``AccessHooks.access_changed``), so open sockets are checked again on every node."""

    def __init__(self, pool: asyncpg.Pool, access: AccessHooks) -> None:
        self._pool = pool
        self._access = access

    async def list(self, workspace_id: uuid.UUID) -> dict[str, Any]:
        members = await self._pool.fetch(
            "SELECT m.user_id, m.role, u.name, u.email FROM workspace_members m"
            " JOIN users u ON u.id = m.user_id WHERE m.workspace_id = $1"
            " ORDER BY m.created_at, u.name",
            workspace_id,
        )
        invited = await self._pool.fetch(
            "SELECT email, role, created_at FROM invitations WHERE workspace_id = $1"
            " ORDER BY created_at",
            workspace_id,
        )
        return {
            "members": [_member_json(r) for r in members],
            "invitations": [
                {"email": r["email"], "role": r["role"], "created_at": r["created_at"].isoformat()}
                for r in invited
            ],
        }

    async def add(
        self, workspace_id: uuid.UUID, email: str, role: Role, by: uuid.UUID
    ) -> dict[str, Any]:
        """Make an existing account a member, or invite an address that has none yet."""
        async with self._pool.acquire() as conn, conn.transaction():
            user = await conn.fetchrow(
                "SELECT id FROM users WHERE lower(email) = $1 AND NOT guest", email
            )
            if user is None:
                await conn.execute(
                    "INSERT INTO invitations (workspace_id, email, role, invited_by)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (workspace_id, email)"
                    " DO UPDATE SET role = EXCLUDED.role",
                    workspace_id,
                    email,
                    role.label,
                    by,
                )
                return {"invited": email, "role": role.label}
            existing = await conn.fetchval(
                "SELECT role FROM workspace_members WHERE workspace_id = $1 AND user_id = $2",
                workspace_id,
                user["id"],
            )
            if existing is not None:
                raise Conflict(f"{email} is already a member ({existing}); change their role")
            await conn.execute(
                "INSERT INTO workspace_members (workspace_id, user_id, role) VALUES ($1, $2, $3)",
                workspace_id,
                user["id"],
                role.label,
            )
            record = await conn.fetchrow(
                "SELECT m.user_id, m.role, u.name, u.email FROM workspace_members m"
                " JOIN users u ON u.id = m.user_id WHERE m.workspace_id = $1 AND m.user_id = $2",
                workspace_id,
                user["id"],
            )
        return _member_json(record)

    async def set_role(self, workspace_id: uuid.UUID, user_id: uuid.UUID, role: Role) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            current = await self._lock_member(conn, workspace_id, user_id)
            if current == "owner" and role is not Role.OWNER:
                await self._keep_an_owner(conn, workspace_id)
            await conn.execute(
                "UPDATE workspace_members SET role = $3, via_link = NULL"
                " WHERE workspace_id = $1 AND user_id = $2",
                workspace_id,
                user_id,
                role.label,
            )
        await self._access.access_changed(f"w:{workspace_id}")

    async def remove(self, workspace_id: uuid.UUID, user_id: uuid.UUID) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            current = await self._lock_member(conn, workspace_id, user_id)
            if current == "owner":
                await self._keep_an_owner(conn, workspace_id)
            await conn.execute(
                "DELETE FROM workspace_members WHERE workspace_id = $1 AND user_id = $2",
                workspace_id,
                user_id,
            )
            # Their notebook grants in this workspace go with them.
            await conn.execute(
                "DELETE FROM notebook_grants g USING notebooks n"
                " WHERE g.notebook_id = n.id AND n.workspace_id = $1 AND g.user_id = $2",
                workspace_id,
                user_id,
            )
        await self._access.access_changed(f"w:{workspace_id}")

    async def _lock_member(
        self, conn: asyncpg.Connection, workspace_id: uuid.UUID, user_id: uuid.UUID
    ) -> str:
        # Lock the workspace row: concurrent changes to its owners are serialised.
        await conn.execute("SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE", workspace_id)
        current = await conn.fetchval(
            "SELECT role FROM workspace_members WHERE workspace_id = $1 AND user_id = $2",
            workspace_id,
            user_id,
        )
        if current is None:
            raise NotFound(f"no member {user_id} in workspace {workspace_id}")
        return str(current)

    async def _keep_an_owner(self, conn: asyncpg.Connection, workspace_id: uuid.UUID) -> None:
        owners = await conn.fetchval(
            "SELECT count(*) FROM workspace_members WHERE workspace_id = $1 AND role = 'owner'",
            workspace_id,
        )
        if owners <= 1:
            raise Conflict("a workspace needs an owner: make someone else owner first")
