"""Who has access to a notebook, and through what: for the Share dialog.

``GET /api/notebooks/{id}/access`` lists every way in: the workspace's members (some joined
through a link), people the notebook was granted to (through a notebook link), and guests
whose link covers the notebook; and the live links that cover it, with how many people each
one let in (revoking it takes their access). ``DELETE .../access/{kind}/{user_id}`` removes
one way in and closes the sockets that relied on it.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collab.api.http import path_uuid
from collab.auth.access import Role, identify, require_notebook, workspace_role
from collab.errors import BadRequest, Forbidden, NotFound
from collab.services.container import services_of

KINDS = ("member", "grant", "guest")

# The links that open this notebook: the workspace's, and this notebook's own.
_COVERS = (
    "l.workspace_id = $1 AND (l.notebook_id IS NULL OR l.notebook_id = $2)"
    " AND l.revoked_at IS NULL AND (l.expires_at IS NULL OR l.expires_at > now())"
)


async def _entries(
    pool: asyncpg.Pool, workspace_id: uuid.UUID, notebook_id: uuid.UUID
) -> list[dict[str, Any]]:
    members = await pool.fetch(
        "SELECT m.user_id, u.name, u.email, m.role, m.via_link, l.created_by"
        " FROM workspace_members m JOIN users u ON u.id = m.user_id"
        " LEFT JOIN share_links l ON l.id = m.via_link"
        " WHERE m.workspace_id = $1 ORDER BY m.created_at, u.name",
        workspace_id,
    )
    grants = await pool.fetch(
        "SELECT g.user_id, u.name, u.email, g.role, g.via_link, l.created_by"
        " FROM notebook_grants g JOIN users u ON u.id = g.user_id"
        " LEFT JOIN share_links l ON l.id = g.via_link"
        " WHERE g.notebook_id = $1 ORDER BY u.name",
        notebook_id,
    )
    guests = await pool.fetch(
        "SELECT DISTINCT ON (c.user_id) c.user_id, u.name, NULL::text AS email, l.role,"
        " l.id AS via_link, l.created_by FROM credentials c"
        " JOIN users u ON u.id = c.user_id JOIN share_links l ON l.id = c.link_id"
        " WHERE c.kind = 'guest' AND c.revoked_at IS NULL"
        " AND (c.expires_at IS NULL OR c.expires_at > now()) AND " + _COVERS + " ORDER BY"
        " c.user_id, c.created_at",
        workspace_id,
        notebook_id,
    )
    out = []
    for kind, records in (("member", members), ("grant", grants), ("guest", guests)):
        for r in records:
            out.append(
                {
                    "kind": kind,
                    "user_id": str(r["user_id"]),
                    "name": r["name"],
                    "email": r["email"],
                    "role": r["role"],
                    "link_id": str(r["via_link"]) if r["via_link"] else None,
                    "_link_by": r["created_by"],
                }
            )
    return out


def _may_remove(entry: dict[str, Any], caller: uuid.UUID, role: Role | None) -> bool:
    if role == Role.OWNER:
        return True
    if entry["kind"] == "member":
        return bool(entry["user_id"] == str(caller))  # anyone may leave
    # A grant or a guest came through a link: its maker may take it back, like the link.
    return role is not None and role >= Role.EDITOR and bool(entry["_link_by"] == caller)


async def list_access(request: Request) -> Response:
    notebook_id = path_uuid(request, "notebook_id", "notebook")
    principal = await require_notebook(request, notebook_id, Role.EDITOR)
    assert principal.workspace_id is not None
    pool = services_of(request).pool
    identity = await identify(request)
    role = await workspace_role(pool, identity, principal.workspace_id)
    entries = await _entries(pool, principal.workspace_id, notebook_id)
    links = await pool.fetch(
        "SELECT l.id, l.notebook_id, l.role, l.created_at FROM share_links l WHERE "
        + _COVERS
        + " ORDER BY l.created_at",
        principal.workspace_id,
        notebook_id,
    )
    people = []
    for entry in entries:
        shown = {k: v for k, v in entry.items() if k != "_link_by"}
        if role is None:
            shown["email"] = None  # addresses are for the workspace's members, as its list is
        people.append(shown | {"removable": _may_remove(entry, principal.user_id, role)})
    return JSONResponse(
        {
            "people": people,
            "links": [
                {
                    "id": str(link["id"]),
                    "notebook_id": str(link["notebook_id"]) if link["notebook_id"] else None,
                    "role": link["role"],
                    "people": sum(1 for e in entries if e["link_id"] == str(link["id"])),
                }
                for link in links
            ],
        }
    )


async def remove_access(request: Request) -> Response:
    notebook_id = path_uuid(request, "notebook_id", "notebook")
    # Who is asking comes first: nothing about the request is answered before that.
    principal = await require_notebook(request, notebook_id, Role.VIEWER)
    user_id = path_uuid(request, "user_id", "person")
    if principal.role < Role.EDITOR and principal.user_id != user_id:
        raise Forbidden("only the notebook's editors can change who has access")
    kind = request.path_params["kind"]
    if kind not in KINDS:
        raise BadRequest(f"'kind' must be one of {', '.join(KINDS)}")
    assert principal.workspace_id is not None
    workspace_id = principal.workspace_id
    services = services_of(request)
    pool = services.pool
    role = await workspace_role(pool, await identify(request), workspace_id)
    entry = next(
        (
            e
            for e in await _entries(pool, workspace_id, notebook_id)
            if e["kind"] == kind and e["user_id"] == str(user_id)
        ),
        None,
    )
    if entry is None:
        raise NotFound(f"{user_id} has no {kind} access to notebook {notebook_id}")
    if not _may_remove(entry, principal.user_id, role):
        raise Forbidden(
            "only an owner can remove members"
            if kind == "member"
            else "only an owner or the person who made the link can remove this access"
        )
    if kind == "member":
        await services.members.remove(workspace_id, user_id)
    elif kind == "grant":
        await pool.execute(
            "DELETE FROM notebook_grants WHERE notebook_id = $1 AND user_id = $2",
            notebook_id,
            user_id,
        )
        await services.access.access_changed(f"w:{workspace_id}")
    else:
        revoked = await pool.fetch(
            "UPDATE credentials c SET revoked_at = now() FROM share_links l"
            " WHERE l.id = c.link_id AND c.user_id = $3 AND c.kind = 'guest'"
            " AND c.revoked_at IS NULL AND l.workspace_id = $1"
            " AND (l.notebook_id IS NULL OR l.notebook_id = $2) RETURNING c.id",
            workspace_id,
            notebook_id,
            user_id,
        )
        for record in revoked:
            await services.access.access_changed(f"c:{record['id']}")
    return Response(status_code=204)


routes = [
    Route("/api/notebooks/{notebook_id}/access", list_access, methods=["GET"]),
    Route(
        "/api/notebooks/{notebook_id}/access/{kind}/{user_id}", remove_access, methods=["DELETE"]
    ),
]
