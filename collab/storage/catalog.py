"""Workspaces and notebooks: the rows that name and group documents."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from collab.errors import BadRequest, NotFound

Row = dict[str, Any]


def _row(record: asyncpg.Record) -> Row:
    out: Row = {}
    for key, value in record.items():
        if isinstance(value, uuid.UUID):
            out[key] = str(value)
        elif isinstance(value, datetime):
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out


def clean_name(value: object, field: str) -> str:
    """A workspace name or notebook title: a non-empty string of at most 200 characters."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"'{field}' must be a non-empty string")
    value = value.strip()
    if len(value) > 200:
        raise BadRequest(f"'{field}' must be at most 200 characters")
    return value


async def _lock_documents(conn: asyncpg.Connection, notebook_ids: list[uuid.UUID]) -> None:
    """Lock the notebooks' snapshot rows, before deleting the notebooks.

    An append (the document store) share-locks a notebook's snapshot row, then its foreign key
    locks the notebook row. A bare DELETE takes them the other way round (the notebook row,
    then the snapshot row through the cascade) and deadlocks with an append in flight,
    until PostgreSQL breaks it after deadlock_timeout. Locked in the append's order, the
    delete waits for an append in progress to commit, and an append that comes later waits
    for the delete, then fails on the foreign key (the writer drops the notebook's room).
    In notebook_id order, so two deletes never deadlock with each other.
    """
    await conn.execute(
        "SELECT 1 FROM document_snapshots WHERE notebook_id = ANY($1::uuid[])"
        " ORDER BY notebook_id FOR UPDATE",
        notebook_ids,
    )


class Catalog:
    """CRUD for workspaces and notebooks.

    >>> catalog = Catalog(pool)
    >>> ws = await catalog.create_workspace("Team")
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_workspace(self, name: str, owner: uuid.UUID) -> Row:
        """A new workspace, with ``owner`` as its first owner (one transaction)."""
        async with self._pool.acquire() as conn, conn.transaction():
            record = await conn.fetchrow(
                "INSERT INTO workspaces (id, name) VALUES ($1, $2) RETURNING *", uuid.uuid4(), name
            )
            await conn.execute(
                "INSERT INTO workspace_members (workspace_id, user_id, role)"
                " VALUES ($1, $2, 'owner')",
                record["id"],
                owner,
            )
        return {**_row(record), "role": "owner"}

    async def list_workspaces(self, user_id: uuid.UUID, link_id: uuid.UUID | None) -> list[Row]:
        """The workspaces a person is a member of (a guest: the one their link covers)."""
        records = await self._pool.fetch(
            "SELECT w.*, a.role,"
            " (SELECT count(*) FROM notebooks n WHERE n.workspace_id = w.id) AS notebook_count"
            " FROM workspaces w JOIN ("
            "   SELECT workspace_id, role FROM workspace_members WHERE user_id = $1"
            "   UNION ALL SELECT workspace_id, role FROM share_links"
            "   WHERE id = $2 AND notebook_id IS NULL"
            " ) a ON a.workspace_id = w.id ORDER BY w.created_at, w.id",
            user_id,
            link_id,
        )
        return [_row(r) for r in records]

    async def get_workspace(self, workspace_id: uuid.UUID) -> Row:
        record = await self._pool.fetchrow("SELECT * FROM workspaces WHERE id = $1", workspace_id)
        if record is None:
            raise NotFound(f"no workspace {workspace_id}")
        return _row(record)

    async def rename_workspace(self, workspace_id: uuid.UUID, name: str) -> Row:
        record = await self._pool.fetchrow(
            "UPDATE workspaces SET name = $2, updated_at = now() WHERE id = $1 RETURNING *",
            workspace_id,
            name,
        )
        if record is None:
            raise NotFound(f"no workspace {workspace_id}")
        return _row(record)

    async def delete_workspace(self, workspace_id: uuid.UUID) -> list[uuid.UUID]:
        """Delete the workspace and its notebooks; returns the notebook ids that went."""
        async with self._pool.acquire() as conn, conn.transaction():
            # Locked first: a notebook being created in the workspace now waits for this
            # delete (then finds no workspace), so every notebook that goes is locked below.
            await conn.execute("SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE", workspace_id)
            ids = [
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM notebooks WHERE workspace_id = $1", workspace_id
                )
            ]
            await _lock_documents(conn, ids)
            status = await conn.execute("DELETE FROM workspaces WHERE id = $1", workspace_id)
        if status == "DELETE 0":
            raise NotFound(f"no workspace {workspace_id}")
        return ids

    async def create_notebook(
        self, workspace_id: uuid.UUID, notebook_id: uuid.UUID, title: str, seed: bytes
    ) -> Row:
        """The notebook row and its seeded document (snapshot at seq 0), in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                record = await conn.fetchrow(
                    "INSERT INTO notebooks (id, workspace_id, title) VALUES ($1, $2, $3)"
                    " RETURNING *",
                    notebook_id,
                    workspace_id,
                    title,
                )
            except asyncpg.ForeignKeyViolationError:
                raise NotFound(f"no workspace {workspace_id}") from None
            await conn.execute(
                "INSERT INTO document_snapshots (notebook_id, seq, data) VALUES ($1, 0, $2)",
                notebook_id,
                seed,
            )
        return _row(record)

    async def list_notebooks(self, workspace_id: uuid.UUID) -> list[Row]:
        await self.get_workspace(workspace_id)
        records = await self._pool.fetch(
            "SELECT * FROM notebooks WHERE workspace_id = $1 ORDER BY created_at, id",
            workspace_id,
        )
        return [_row(r) for r in records]

    async def get_notebook(self, notebook_id: uuid.UUID) -> Row:
        record = await self._pool.fetchrow("SELECT * FROM notebooks WHERE id = $1", notebook_id)
        if record is None:
            raise NotFound(f"no notebook {notebook_id}")
        return _row(record)

    async def notebook_exists(self, notebook_id: uuid.UUID) -> bool:
        found = await self._pool.fetchval("SELECT 1 FROM notebooks WHERE id = $1", notebook_id)
        return found is not None

    async def rename_notebook(self, notebook_id: uuid.UUID, title: str) -> Row:
        record = await self._pool.fetchrow(
            "UPDATE notebooks SET title = $2, updated_at = now() WHERE id = $1 RETURNING *",
            notebook_id,
            title,
        )
        if record is None:
            raise NotFound(f"no notebook {notebook_id}")
        return _row(record)

    async def delete_notebook(self, notebook_id: uuid.UUID) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await _lock_documents(conn, [notebook_id])
            status = await conn.execute("DELETE FROM notebooks WHERE id = $1", notebook_id)
        if status == "DELETE 0":
            raise NotFound(f"no notebook {notebook_id}")
