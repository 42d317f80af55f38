"""UI login endpoints for Caddy's ``forward_auth`` (OpenID Connect, signed session cookie).

``/auth/check`` is asked by Caddy before every UI request: 200 with ``X-E2I-User`` and
``X-E2I-Role`` (Caddy copies them to the webserver request), else 401, or for a browser page a
redirect to ``/auth/login``. ``/auth/login`` -> IdP -> ``/auth/callback`` sets the session.
Both login endpoints count against a per-client-IP budget (429 with ``Retry-After`` above it).
"""

from __future__ import annotations

import hmac
import logging
import re
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from e2i_api.auth.client_address import client_ip
from e2i_api.auth.oidc import OidcClient, OidcError, new_login_secrets
from e2i_api.auth.roles import resolve_role, user_of
from e2i_api.auth.session import LOGIN_COOKIE, SESSION_COOKIE, CookieCodec, Identity, safe_user
from e2i_api.core.config import Settings
from e2i_api.core.rate_limit import RateLimits

USER_HEADER = "X-E2I-User"
ROLE_HEADER = "X-E2I-Role"
_LOCAL_PATH = re.compile(r"^/(?![/\\])[\x21-\x7e]{0,2047}$")

audit_logger = logging.getLogger("e2i.audit")
router = APIRouter(prefix="/auth", tags=["auth"], include_in_schema=False)


class UiAuth:
    """The OIDC client and cookie codec of one app (None when login is not configured), and its
    login rate limit."""

    def __init__(self, settings: Settings) -> None:
        database_url = settings.database_url.get_secret_value() if settings.database_url else None
        self.limits = RateLimits(settings.rate_limit_read, settings.rate_limit_write, database_url)
        oidc = settings.oidc
        self.settings = oidc
        self.client = OidcClient(oidc) if oidc.enabled else None
        secret = oidc.secret("session_secret") if oidc.enabled else ""
        self.codec = CookieCodec(secret, oidc.session_hours * 3600) if secret else None


def _auth(request: Request) -> UiAuth:
    state = request.app.state
    if getattr(state, "ui_auth", None) is None:
        state.ui_auth = UiAuth(state.settings)
    return state.ui_auth


def _enabled(request: Request) -> tuple[OidcClient, CookieCodec]:
    auth = _auth(request)
    if auth.client is None or auth.codec is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "UI login is not configured (oidc.issuer)")
    return auth.client, auth.codec


async def _limit_login(request: Request) -> None:
    await _auth(request).limits.check_login(client_ip(request.scope))


def local_path(value: str | None) -> str:
    """``value`` if it is a path on this site (no scheme, host or ``//``), else ``/``."""
    return value if value and _LOCAL_PATH.match(value) else "/"


def _cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="lax")


def _wants_page(request: Request) -> bool:
    """A browser navigating (GET of an HTML page), not an XHR/GraphQL/API call."""
    method = request.headers.get("X-Forwarded-Method", request.method).upper()
    return method == "GET" and "text/html" in request.headers.get("Accept", "")


@router.get("/check")
async def check(request: Request) -> Response:
    """200 with the identity headers for a valid session; else 401 or (browser) a login redirect."""
    codec = _auth(request).codec
    identity = codec.load_session(request.cookies.get(SESSION_COOKIE)) if codec else None
    if identity is not None:
        return PlainTextResponse("ok", headers={USER_HEADER: identity.user, ROLE_HEADER: identity.role})
    if codec is not None and _wants_page(request):
        target = local_path(request.headers.get("X-Forwarded-Uri"))
        login = request.url_for("login").include_query_params(next=target)
        return RedirectResponse(login.path + "?" + login.query, status.HTTP_302_FOUND)
    return PlainTextResponse("login required", status.HTTP_401_UNAUTHORIZED,
                             headers={"WWW-Authenticate": 'Cookie realm="e2i"'})


@router.get("/login")
async def login(request: Request, next: Annotated[str | None, Query(max_length=2048)] = None) -> Response:
    """Redirect to the IdP with fresh state, nonce and PKCE challenge (kept in a signed cookie)."""
    await _limit_login(request)
    client, codec = _enabled(request)
    secrets = new_login_secrets()
    try:
        url = await client.authorization_url(secrets)
    except OidcError as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"login unavailable: {exc}") from None
    response = RedirectResponse(url, status.HTTP_302_FOUND)
    _cookie(response, LOGIN_COOKIE, codec.dump_login({**secrets, "next": local_path(next)}), 600)
    return response


@router.get("/callback")
async def callback(request: Request, code: Annotated[str | None, Query(max_length=4096)] = None,
                   state: Annotated[str | None, Query(max_length=512)] = None) -> Response:
    """The IdP's redirect: check state, exchange the code, validate the ID token, set the session."""
    await _limit_login(request)
    client, codec = _enabled(request)
    pending = codec.load_login(request.cookies.get(LOGIN_COOKIE))
    if pending is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "no login in progress or it expired: start again at /auth/login")
    if not state or not hmac.compare_digest(state.encode(), pending["state"].encode()):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "login state does not match: start again at /auth/login")
    if not code:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "the identity provider did not authorize the login")
    try:
        claims = await client.exchange(code, pending)
    except OidcError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"login failed: {exc}") from None
    user = user_of(claims, client.settings)
    if not safe_user(user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"login refused: claim {client.settings.user_claim!r} "
                            "is missing or not a printable name")
    role = resolve_role(claims, client.settings)
    address = client_ip(request.scope)
    if role is None:
        audit_logger.info("audit", extra={"principal": user, "client_ip": address, "action": "ui_login",
                                          "outcome": 403})
        raise HTTPException(status.HTTP_403_FORBIDDEN, "login refused: this account has no e2i role")
    audit_logger.info("audit", extra={"principal": user, "role": role, "client_ip": address,
                                      "action": "ui_login", "outcome": 302})
    response = RedirectResponse(pending.get("next", "/"), status.HTTP_302_FOUND)
    _cookie(response, SESSION_COOKIE, codec.dump_session(Identity(user, role)), codec.session_seconds)
    response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
    return response


@router.api_route("/logout", methods=["GET", "POST"])
async def logout() -> Response:
    """Drop the session cookie (the IdP session stays: its own logout ends it)."""
    response = PlainTextResponse("signed out")
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
    return response
