"""Who is calling and what they may do: the one check every route and socket goes through.

A request carries a credential (``Authorization: Bearer``, the session cookie, or on the
WebSocket a socket ticket ``?ticket=`` or, for compatibility, ``?token=``); it resolves to
an ``Identity`` (collab.auth.accounts), and the caller's role on a notebook or workspace is the
highest of their membership, a notebook grant, and (for a guest) the share link that made
them.

>>> principal = await require_notebook(request, notebook_id, Role.EDITOR)
>>> principal.user_id, principal.name
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import asyncpg
from starlette.requests import HTTPConnection

from collab.app_services import kept_services
from collab.auth.credentials import token_hash
from collab.errors import BadRequest, Forbidden, NotFound, Unauthorized
from collab.ids import parse_uuid
from collab.settings import Settings

if TYPE_CHECKING:
    from collab.auth.accounts import Accounts, Identity

SESSION_COOKIE = "weft_session"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Role(enum.IntEnum):
    """Workspace roles, ordered: a higher role can do everything a lower one can."""

    VIEWER = 1
    EDITOR = 2
    OWNER = 3

    @classmethod
    def parse(cls, value: object, *, allowed: tuple[Role, ...] | None = None) -> Role:
        choices = allowed or tuple(cls)
        for role in choices:
            if isinstance(value, str) and value.lower() == role.label:
                return role
        raise BadRequest(f"'role' must be one of {', '.join(r.label for r in choices)}")

    @property
    def label(self) -> str:
        return self.name.lower()


class AccessServices(Protocol):
    """What the access check reads from the server's services (collab.services.Services
    is one): auth is a layer below them, so it names only these."""

    @property
    def settings(self) -> Settings: ...
    @property
    def pool(self) -> asyncpg.Pool: ...
    @property
    def accounts(self) -> Accounts: ...


def access_services(conn: HTTPConnection) -> AccessServices:
    services: AccessServices = kept_services(conn)
    return services


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, with their role on the thing they asked for."""

    user_id: uuid.UUID
    name: str
    role: Role
    guest: bool = False
    credential_id: uuid.UUID | None = None
    # The workspace of the thing asked for (None from current_principal).
    workspace_id: uuid.UUID | None = None
    # A guest sees only what their share link covers: a workspace, or one notebook of it.
    scope_workspace: uuid.UUID | None = None
    scope_notebook: uuid.UUID | None = None


def credential_of(conn: HTTPConnection) -> tuple[str, str] | None:
    """(token, where it came from: bearer | ticket | query | cookie), or None."""
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), "bearer"
    if conn.scope["type"] == "websocket":
        if conn.query_params.get("ticket"):
            return conn.query_params["ticket"], "ticket"
        # A long-lived token in a URL: still accepted, never logged (collab.logs); a ticket
        # or the Authorization header is better.
        if conn.query_params.get("token"):
            return conn.query_params["token"], "query"
    cookie = conn.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie, "cookie"
    return None


def check_origin(conn: HTTPConnection) -> None:
    """Browsers send Origin; a page from elsewhere must not ride on our cookie or socket."""
    origin = conn.headers.get("origin")
    if origin is None:
        return  # not a browser (or a same-origin GET): nothing to check
    settings = access_services(conn).settings
    origin = origin.rstrip("/")
    if origin in settings.origins or origin == settings.public_origin:
        return
    if urlsplit(origin).netloc == conn.headers.get("host"):
        return
    raise Forbidden(f"origin {origin} is not allowed; add it to WEFT_ORIGINS")


async def identify(conn: HTTPConnection) -> Identity:
    """The caller's identity (cached on the request). Raises Unauthorized."""
    cached: Identity | None = getattr(conn.state, "weft_identity", None)
    if cached is not None:
        return cached
    found = credential_of(conn)
    if found is None:
        raise Unauthorized(
            "sign in first: send 'Authorization: Bearer <token>' (on the WebSocket, or"
            " ?ticket= from POST /api/auth/socket-ticket)"
        )
    token, source = found
    if conn.scope["type"] == "websocket" or (
        source == "cookie" and conn.scope.get("method") not in _SAFE_METHODS
    ):
        check_origin(conn)
    accounts = access_services(conn).accounts
    if source == "ticket":
        notebook_id = parse_uuid(conn.path_params.get("notebook_id", ""))
        found_ticket = await accounts.resolve_ticket(token, notebook_id)
        if found_ticket is None:
            raise Unauthorized(
                "the ticket is unknown, expired, or for another notebook; get a new one"
            )
        identity, digest = found_ticket
    else:
        resolved = await accounts.resolve(token)
        if resolved is None:
            raise Unauthorized("the token is unknown, expired or revoked; sign in again")
        identity, digest = resolved, token_hash(token)
    conn.state.weft_identity = identity
    conn.state.weft_credential_digest = digest
    return identity


def credential_digest(conn: HTTPConnection) -> bytes:
    """The stored digest of the credential ``identify`` found (for a ticket: of the
    credential that asked for it), which the access watch checks again later."""
    digest: bytes = conn.state.weft_credential_digest
    return digest


async def _guest_scope(
    pool: asyncpg.Pool, identity: Identity
) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    if identity.link_id is None:
        return None, None
    record = await pool.fetchrow(
        "SELECT workspace_id, notebook_id FROM share_links WHERE id = $1", identity.link_id
    )
    if record is None:
        raise Unauthorized("the share link of this guest session is gone")
    return record["workspace_id"], record["notebook_id"]


def _principal(
    identity: Identity,
    role: Role,
    scope: tuple[uuid.UUID | None, ...],
    workspace_id: uuid.UUID | None = None,
) -> Principal:
    return Principal(
        workspace_id=workspace_id,
        user_id=identity.user_id,
        name=identity.name,
        role=role,
        guest=identity.guest,
        credential_id=identity.credential_id,
        scope_workspace=scope[0],
        scope_notebook=scope[1],
    )


async def current_principal(conn: HTTPConnection) -> Principal:
    """The signed-in caller, with no particular resource (role VIEWER). Raises Unauthorized."""
    identity = await identify(conn)
    pool = access_services(conn).pool
    return _principal(identity, Role.VIEWER, await _guest_scope(pool, identity))


def _best(*labels: str | None) -> Role | None:
    roles = [Role[label.upper()] for label in labels if label]
    return max(roles) if roles else None


async def notebook_role(
    pool: asyncpg.Pool, identity: Identity, notebook_id: uuid.UUID
) -> tuple[uuid.UUID, Role | None]:
    """(the notebook's workspace, the identity's role on it or None). Raises NotFound."""
    record = await pool.fetchrow(
        "SELECT n.workspace_id,"
        " (SELECT role FROM workspace_members m"
        "   WHERE m.workspace_id = n.workspace_id AND m.user_id = $2) AS member,"
        " (SELECT role FROM notebook_grants g"
        "   WHERE g.notebook_id = n.id AND g.user_id = $2) AS granted,"
        " (SELECT role FROM share_links l WHERE l.id = $3 AND l.workspace_id = n.workspace_id"
        "   AND (l.notebook_id IS NULL OR l.notebook_id = n.id) AND l.revoked_at IS NULL"
        "   AND (l.expires_at IS NULL OR l.expires_at > now())) AS linked"
        " FROM notebooks n WHERE n.id = $1",
        notebook_id,
        identity.user_id,
        identity.link_id,
    )
    if record is None:
        raise NotFound(f"no notebook {notebook_id}")
    role = _best(record["member"], record["granted"], record["linked"])
    return record["workspace_id"], role


async def workspace_role(
    pool: asyncpg.Pool, identity: Identity, workspace_id: uuid.UUID
) -> Role | None:
    """The identity's role on the whole workspace, or None. Raises NotFound."""
    record = await pool.fetchrow(
        "SELECT (SELECT role FROM workspace_members m"
        "   WHERE m.workspace_id = w.id AND m.user_id = $2) AS member,"
        " (SELECT role FROM share_links l WHERE l.id = $3 AND l.workspace_id = w.id"
        "   AND l.notebook_id IS NULL AND l.revoked_at IS NULL"
        "   AND (l.expires_at IS NULL OR l.expires_at > now())) AS linked"
        " FROM workspaces w WHERE w.id = $1",
        workspace_id,
        identity.user_id,
        identity.link_id,
    )
    if record is None:
        raise NotFound(f"no workspace {workspace_id}")
    return _best(record["member"], record["linked"])


async def files_role(
    pool: asyncpg.Pool, identity: Identity, workspace_id: uuid.UUID
) -> Role | None:
    """The identity's role on the workspace's files: its role on the workspace, or editor
    if it may edit (and so run) any notebook of it, through a notebook grant or a notebook
    link. Every notebook's kernels mount the workspace's files, so such a person reaches
    them through code anyway; someone who may only view a notebook does not. Raises
    NotFound for an unknown workspace."""
    record = await pool.fetchrow(
        "SELECT (SELECT role FROM workspace_members m"
        "   WHERE m.workspace_id = w.id AND m.user_id = $2) AS member,"
        " (SELECT role FROM share_links l WHERE l.id = $3 AND l.workspace_id = w.id"
        "   AND l.revoked_at IS NULL AND (l.expires_at IS NULL OR l.expires_at > now()))"
        "   AS linked,"
        " (SELECT l.notebook_id IS NULL FROM share_links l WHERE l.id = $3) AS whole,"
        " EXISTS (SELECT 1 FROM notebook_grants g JOIN notebooks n ON n.id = g.notebook_id"
        "   WHERE n.workspace_id = w.id AND g.user_id = $2 AND g.role <> 'viewer') AS grants"
        " FROM workspaces w WHERE w.id = $1",
        workspace_id,
        identity.user_id,
        identity.link_id,
    )
    if record is None:
        raise NotFound(f"no workspace {workspace_id}")
    linked = record["linked"]
    whole_link = linked if record["whole"] else None
    notebook_link = linked if linked and not record["whole"] else None
    runs_code = record["grants"] or (notebook_link is not None and notebook_link != "viewer")
    return _best(record["member"], whole_link, "editor" if runs_code else None)


def _enforce(role: Role | None, minimum: Role, kind: str, thing: uuid.UUID) -> Role:
    if role is None:
        # Not a member: as far as they can tell, it does not exist.
        raise NotFound(f"no {kind} {thing}")
    if role < minimum:
        raise Forbidden(f"this needs the {minimum.label} role on the {kind}; you are {role.label}")
    return role


async def require_notebook(
    conn: HTTPConnection, notebook_id: uuid.UUID, minimum: Role
) -> Principal:
    """The caller, if they hold at least ``minimum`` on the notebook.
    Raises Unauthorized (401), Forbidden (403) or NotFound (404: also when not a member)."""
    identity = await identify(conn)
    pool = access_services(conn).pool
    workspace_id, role = await notebook_role(pool, identity, notebook_id)
    granted = _enforce(role, minimum, "notebook", notebook_id)
    return _principal(identity, granted, await _guest_scope(pool, identity), workspace_id)


async def require_workspace(
    conn: HTTPConnection, workspace_id: uuid.UUID, minimum: Role
) -> Principal:
    """The caller, if they hold at least ``minimum`` on the workspace (see require_notebook)."""
    identity = await identify(conn)
    pool = access_services(conn).pool
    role = await workspace_role(pool, identity, workspace_id)
    granted = _enforce(role, minimum, "workspace", workspace_id)
    return _principal(identity, granted, await _guest_scope(pool, identity), workspace_id)


async def require_files(conn: HTTPConnection, workspace_id: uuid.UUID, minimum: Role) -> Principal:
    """The caller, if they hold at least ``minimum`` on the workspace's files (files_role)."""
    identity = await identify(conn)
    pool = access_services(conn).pool
    role = await files_role(pool, identity, workspace_id)
    granted = _enforce(role, minimum, "workspace", workspace_id)
    return _principal(identity, granted, await _guest_scope(pool, identity), workspace_id)


async def require_account(conn: HTTPConnection) -> Identity:
    """A signed-in person with an account (not a guest): creating workspaces, tokens."""
    identity = await identify(conn)
    if identity.guest:
        raise Forbidden("guests cannot do this; sign up to get an account")
    return identity
