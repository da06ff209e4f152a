"""REST for accounts and sharing: sign-up, login, logout, API tokens, socket tickets,
members, share links."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collab.api.http import (
    MAX_JSON_BYTES,
    json_object,
    optional_uuid,
    path_uuid,
    read_body,
)
from collab.auth.access import (
    SESSION_COOKIE,
    Role,
    check_origin,
    credential_of,
    identify,
    require_account,
    require_notebook,
    require_workspace,
)
from collab.auth.accounts import Identity, clean_email, user_json
from collab.auth.credentials import new_token
from collab.auth.login_throttle import DEVICE_PREFIX, LoginSource
from collab.errors import BadRequest, Forbidden, Unauthorized, UnsupportedMediaType
from collab.services.container import services_of

# A browser's mark that it signed in before (collab.auth.login_throttle): no credential.
DEVICE_COOKIE = "weft_device"


def _secure(request: Request) -> bool:
    """Whether the browser reached us over https: the public URL says so, or the request
    (through a trusted proxy's X-Forwarded-Proto, which uvicorn applies)."""
    public = services_of(request).settings.public_url
    return (public or "").startswith("https://") or request.url.scheme == "https"


def _with_session(
    request: Request,
    body: dict[str, object],
    token: str,
    status: int,
    source: LoginSource | None = None,
) -> Response:
    """The token in the body (API clients) and in an HttpOnly cookie (the browser)."""
    settings = services_of(request).settings
    response = JSONResponse({"token": token, **body}, status_code=status)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(settings.session_days * 86400),
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
    )
    if source is not None and source.device is not None:
        response.set_cookie(
            DEVICE_COOKIE,
            source.device,
            max_age=int(settings.login_known_days * 86400),
            httponly=True,
            samesite="strict",
            secure=_secure(request),
            path="/api/auth",
        )
    return response


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _source(request: Request) -> LoginSource:
    """The caller's address and browser (its device cookie, or a new one to set)."""
    device = request.cookies.get(DEVICE_COOKIE)
    if not (device and device.startswith(DEVICE_PREFIX) and len(device) < 100):
        device = new_token("device")
    return LoginSource(_address(request), device)


async def _public_body(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The JSON body of a call that needs no credential (sign-up, login, accepting a link),
    so that nothing else stops another site's page from posting it (signing a visitor in
    as someone else, or as a guest): it must come from an allowed Origin, as JSON, which a
    form cannot send and another site's script cannot without a CORS preflight, which this
    server never grants. ``optional``: an empty body may also come without a type."""
    check_origin(request)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json":
        return await json_object(request)
    if optional and not media and not await read_body(request, MAX_JSON_BYTES):
        return {}
    raise UnsupportedMediaType("send the body as JSON (Content-Type: application/json)")


async def signup(request: Request) -> Response:
    body = await _public_body(request)
    link = body.get("link")
    source = _source(request)
    user, token = await services_of(request).accounts.signup(
        body.get("email"),
        body.get("password"),
        body.get("name"),
        source=source,
        link_token=link if isinstance(link, str) else None,
    )
    return _with_session(request, {"user": user}, token, 201, source)


async def login(request: Request) -> Response:
    body = await _public_body(request)
    source = _source(request)
    user, token = await services_of(request).accounts.login(
        body.get("email"), body.get("password"), source
    )
    return _with_session(request, {"user": user}, token, 200, source)


async def socket_ticket(request: Request) -> Response:
    """A short-lived ticket for ``/ws/{notebook_id}?ticket=``, instead of a long-lived token
    in a URL (where proxies log it)."""
    identity = await identify(request)
    body = await json_object(request)
    notebook_id = optional_uuid(body.get("notebook_id"), "notebook_id")
    if notebook_id is None:
        raise BadRequest("'notebook_id' is required")
    await require_notebook(request, notebook_id, Role.VIEWER)
    accounts = services_of(request).accounts
    ticket, expires_at = await accounts.issue_ticket(identity, notebook_id)
    seconds = services_of(request).settings.socket_ticket_seconds
    answer = {
        "ticket": ticket,
        "notebook_id": str(notebook_id),
        "expires_at": expires_at.isoformat(),
        "expires_in": int(seconds),
    }
    return JSONResponse(answer, status_code=201)


async def logout(request: Request) -> Response:
    identity = await identify(request)
    services = services_of(request)
    await services.accounts.logout(identity)
    await services.access.access_changed(f"c:{identity.credential_id}")
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def me(request: Request) -> Response:
    identity = await identify(request)
    return JSONResponse({"user": user_json(identity), "credential": identity.kind})


async def rename_me(request: Request) -> Response:
    identity = await identify(request)
    body = await json_object(request)
    services = services_of(request)
    user = await services.accounts.rename(identity, body.get("name"))
    # Presence is stamped by the server: re-stamp what this person shows in open notebooks.
    for room in services.rooms.all():
        room.rename_user(str(identity.user_id), str(user["name"]))
    return JSONResponse({"user": user, "credential": identity.kind})


async def list_tokens(request: Request) -> Response:
    identity = await require_account(request)
    tokens = await services_of(request).accounts.list_api_tokens(identity.user_id)
    return JSONResponse({"tokens": tokens})


async def create_token(request: Request) -> Response:
    identity = await require_account(request)
    body = await json_object(request)
    row, token = await services_of(request).accounts.create_api_token(
        identity, body.get("label"), body.get("expires_in")
    )
    return JSONResponse({**row, "token": token}, status_code=201)


async def revoke_token(request: Request) -> Response:
    identity = await require_account(request)
    token_id = path_uuid(request, "token_id", "API token")
    services = services_of(request)
    await services.accounts.revoke_api_token(identity.user_id, token_id)
    await services.access.access_changed(f"c:{token_id}")
    return Response(status_code=204)


# -- members --------------------------------------------------------------------------


async def list_members(request: Request) -> Response:
    workspace_id = path_uuid(request, "workspace_id", "workspace")
    await require_workspace(request, workspace_id, Role.VIEWER)
    return JSONResponse(await services_of(request).members.list(workspace_id))


async def add_member(request: Request) -> Response:
    workspace_id = path_uuid(request, "workspace_id", "workspace")
    principal = await require_workspace(request, workspace_id, Role.OWNER)
    body = await json_object(request)
    email = clean_email(body.get("email"))
    role = Role.parse(body.get("role", "viewer"))
    added = await services_of(request).members.add(workspace_id, email, role, principal.user_id)
    return JSONResponse(added, status_code=201)


async def change_member(request: Request) -> Response:
    workspace_id = path_uuid(request, "workspace_id", "workspace")
    await require_workspace(request, workspace_id, Role.OWNER)
    user_id = path_uuid(request, "user_id", "member")
    body = await json_object(request)
    role = Role.parse(body.get("role"))
    await services_of(request).members.set_role(workspace_id, user_id, role)
    return JSONResponse({"user_id": str(user_id), "role": role.label})


async def remove_member(request: Request) -> Response:
    workspace_id = path_uuid(request, "workspace_id", "workspace")
    user_id = path_uuid(request, "user_id", "member")
    principal = await require_workspace(request, workspace_id, Role.VIEWER)
    # Owners remove anyone; anyone may leave.
    if principal.user_id != user_id and principal.role < Role.OWNER:
        raise Forbidden("only an owner can remove other members")
    await services_of(request).members.remove(workspace_id, user_id)
    return Response(status_code=204)


# -- share links ----------------------------------------------------------------------


async def create_link(request: Request) -> Response:
    workspace_id = path_uuid(request, "workspace_id", "workspace")
    principal = await require_workspace(request, workspace_id, Role.EDITOR)
    body = await json_object(request)
    role = Role.parse(body.get("role", "viewer"), allowed=(Role.VIEWER, Role.EDITOR))
    notebook_id = optional_uuid(body.get("notebook_id"), "notebook_id")
    row, token = await services_of(request).links.create(
        principal, workspace_id, role, notebook_id, body.get("expires_in"), body.get("max_uses")
    )
    base = services_of(request).settings.public_url or str(request.base_url).rstrip("/")
    url = f"{base}/links/{token}"
    return JSONResponse({**row, "token": token, "url": url}, status_code=201)


async def list_links(request: Request) -> Response:
    workspace_id = path_uuid(request, "workspace_id", "workspace")
    await require_workspace(request, workspace_id, Role.EDITOR)
    return JSONResponse({"links": await services_of(request).links.list(workspace_id)})


async def revoke_link(request: Request) -> Response:
    link_id = path_uuid(request, "link_id", "share link")
    identity = await identify(request)
    services = services_of(request)
    link = await services.links.workspace_of(link_id)
    principal = await require_workspace(request, link["workspace_id"], Role.EDITOR)
    # Owners revoke any link of their workspace; editors the links they made.
    if principal.role < Role.OWNER and link["created_by"] != identity.user_id:
        raise Forbidden("only an owner or the link's creator can revoke it")
    await services.links.revoke(link_id)
    return Response(status_code=204)


async def preview_link(request: Request) -> Response:
    return JSONResponse(await services_of(request).links.preview(request.path_params["token"]))


async def accept_link(request: Request) -> Response:
    """Signed in with an account: join with the link's role. Otherwise: a guest session."""
    identity: Identity | None = None
    bearer = None
    found = credential_of(request)
    if found is not None:
        try:
            identity = await identify(request)
            bearer = found[0]
        except Unauthorized:
            identity = None  # a stale session: treat as signed out
    body = await _public_body(request, optional=True)
    accepted = await services_of(request).links.accept(
        request.path_params["token"], identity, bearer, body.get("name")
    )
    token = accepted.pop("token")
    return _with_session(request, accepted, token, 200)


routes = [
    Route("/api/auth/signup", signup, methods=["POST"]),
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
    Route("/api/auth/me", me, methods=["GET"]),
    Route("/api/auth/me", rename_me, methods=["PATCH"]),
    Route("/api/auth/tokens", list_tokens, methods=["GET"]),
    Route("/api/auth/tokens", create_token, methods=["POST"]),
    Route("/api/auth/tokens/{token_id}", revoke_token, methods=["DELETE"]),
    Route("/api/auth/socket-ticket", socket_ticket, methods=["POST"]),
    Route("/api/workspaces/{workspace_id}/members", list_members, methods=["GET"]),
    Route("/api/workspaces/{workspace_id}/members", add_member, methods=["POST"]),
    Route("/api/workspaces/{workspace_id}/members/{user_id}", change_member, methods=["PATCH"]),
    Route("/api/workspaces/{workspace_id}/members/{user_id}", remove_member, methods=["DELETE"]),
    Route("/api/workspaces/{workspace_id}/links", list_links, methods=["GET"]),
    Route("/api/workspaces/{workspace_id}/links", create_link, methods=["POST"]),
    Route("/api/links/{link_id}", revoke_link, methods=["DELETE"]),
    Route("/api/links/{token}", preview_link, methods=["GET"]),
    Route("/api/links/{token}/accept", accept_link, methods=["POST"]),
]

# Routes anyone may call without a credential (the route-table test holds every other
# route to 401 without one).
PUBLIC = {
    ("POST", "/api/auth/signup"),
    ("POST", "/api/auth/login"),
    ("GET", "/api/links/{token}"),
    ("POST", "/api/links/{token}/accept"),
}
