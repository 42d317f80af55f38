"""Units of the UI login: session cookies (signing, expiry, tampering), role mapping, settings,
ID-token validation (against a local key set) and /auth/check answers."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from pydantic import ValidationError

from e2i_api.api.routes.auth import local_path, router
from e2i_api.auth.oidc import OidcClient, OidcError
from e2i_api.auth.roles import WRITABLE_ROLES, can_write, resolve_role, user_of
from e2i_api.auth.session import SESSION_COOKIE, CookieCodec, Identity
from e2i_api.core.config import OidcSettings, Settings
from tests.support.dagster_processes import REPO_ROOT

SECRET = "s" * 40
ISSUER = "https://idp.example.com"


def oidc(**overrides) -> OidcSettings:
    values = {"issuer": ISSUER, "client_id": "e2i-ui", "client_secret": "client-secret",
              "redirect_url": "https://e2i.example.com/auth/callback", "session_secret": SECRET,
              **overrides}
    return OidcSettings(**values)


# --- session cookies -------------------------------------------------------------------------

def test_session_round_trip() -> None:
    codec = CookieCodec(SECRET, 3600)
    assert codec.load_session(codec.dump_session(Identity("ana@example.com", "editor"))) == \
        Identity("ana@example.com", "editor")


def test_session_tampered_or_foreign_key_is_refused() -> None:
    codec = CookieCodec(SECRET, 3600)
    value = codec.dump_session(Identity("ana@example.com", "viewer"))
    payload, _, signature = value.rpartition(".")
    assert codec.load_session(payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:]) is None
    forged = URLSafeTimedSerializer("x" * 40, salt="e2i-session").dumps({"u": "ana", "r": "admin"})
    assert codec.load_session(forged) is None
    # a login-state token is not a session (other salt)
    assert codec.load_session(codec.dump_login({"state": "s"})) is None
    assert codec.load_session("") is None and codec.load_session(None) is None
    assert codec.load_session("x" * 5000) is None


def test_session_expires() -> None:
    codec = CookieCodec(SECRET, 1)
    value = codec.dump_session(Identity("ana", "viewer"))
    assert codec.load_session(value) is not None
    time.sleep(2.1)
    assert codec.load_session(value) is None


def test_session_with_unknown_role_or_unsafe_user_is_refused() -> None:
    codec = CookieCodec(SECRET, 3600)
    signer = URLSafeTimedSerializer(SECRET, salt="e2i-session")
    assert codec.load_session(signer.dumps({"u": "ana", "r": "root"})) is None
    assert codec.load_session(signer.dumps({"u": "ana\r\nX-E2I-Role: admin", "r": "viewer"})) is None


# --- roles -----------------------------------------------------------------------------------

def test_roles_from_claim_mapping_and_users() -> None:
    settings = oidc(role_map={"e2i-editors": "editor", "e2i-admins": "admin"},
                    user_roles={"boss@example.com": "admin"})
    assert resolve_role({"email": "a@x", "groups": ["staff", "e2i-editors"]}, settings) == "editor"
    assert resolve_role({"email": "a@x", "groups": ["e2i-editors", "e2i-admins"]}, settings) == "admin"
    assert resolve_role({"email": "a@x", "groups": "viewer"}, settings) == "viewer"  # a role name
    assert resolve_role({"email": "boss@example.com"}, settings) == "admin"
    assert resolve_role({"email": "a@x", "groups": ["staff"]}, settings) is None
    assert resolve_role({"email": "a@x", "groups": [{"x": 1}, 3]}, settings) is None
    assert resolve_role({"email": "a@x"}, oidc(default_role="viewer")) == "viewer"
    assert user_of({"sub": "123"}, settings) == "123"  # no email claim: sub


def test_writable_roles_match_the_caddyfile() -> None:
    caddyfile = (REPO_ROOT / "docker" / "caddy" / "Caddyfile").read_text()
    assert "header_regexp X-E2I-Role ^(editor|admin)$" in caddyfile
    assert {"editor", "admin"} == WRITABLE_ROLES and not can_write("viewer")


# --- settings --------------------------------------------------------------------------------

def test_oidc_off_by_default_and_env_nested(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    assert not Settings(_env_file=None).oidc.enabled
    secret_file = tmp_path / "client_secret"
    secret_file.write_text("from-a-file\n")
    session_file = tmp_path / "session"
    session_file.write_text(SECRET)
    for key, value in {"ISSUER": ISSUER, "CLIENT_ID": "ui", "CLIENT_SECRET_FILE": str(secret_file),
                       "REDIRECT_URL": "https://e2i.example.com/auth/callback",
                       "SESSION_SECRET_FILE": str(session_file),
                       "ROLE_MAP": '{"e2i-editors": "editor"}'}.items():
        monkeypatch.setenv(f"E2I_API_OIDC__{key}", value)
    settings = Settings(_env_file=None).oidc
    assert settings.secret("client_secret") == "from-a-file"
    assert settings.role_map == {"e2i-editors": "editor"}


@pytest.mark.parametrize(("overrides", "names"), [
    ({"issuer": "http://idp.example.com"}, "oidc.issuer"),
    ({"redirect_url": "http://e2i.example.com/auth/callback"}, "oidc.redirect_url"),
    ({"client_id": ""}, "oidc.client_id"),
    ({"session_secret": "short"}, "oidc.session_secret"),
    ({"client_secret": None}, "oidc.client_secret"),
    ({"role_map": {"g": "root"}}, "role_map"),
])
def test_oidc_settings_refused(overrides: dict, names: str) -> None:
    with pytest.raises(ValidationError, match=names.replace(".", r"\.")):
        oidc(**overrides)


def test_unreadable_secret_file_names_the_key_not_the_content(tmp_path) -> None:
    with pytest.raises(ValidationError) as info:
        oidc(client_secret=None, client_secret_file=str(tmp_path / "missing"))
    assert "oidc.client_secret_file: cannot read the file" in str(info.value)
    secret = tmp_path / "secret"
    secret.write_text("hunter2-very-secret")
    with pytest.raises(ValidationError) as info:
        oidc(client_secret="inline", client_secret_file=str(secret))
    assert "hunter2" not in str(info.value)


def test_loopback_http_issuer_allowed() -> None:
    assert oidc(issuer="http://127.0.0.1:9400", redirect_url="http://localhost:8000/auth/callback").enabled


# --- ID token validation ---------------------------------------------------------------------

KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})


def _client() -> OidcClient:
    client = OidcClient(oidc())
    client._metadata = {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/a",
                        "token_endpoint": f"{ISSUER}/t", "jwks_uri": f"{ISSUER}/jwks"}
    client._keys = KeySet([KEY])
    return client


def _token(key=KEY, alg: str = "RS256", **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": "e2i-ui", "sub": "u1", "email": "ana@example.com", "nonce": "n1",
            "iat": now, "exp": now + 300, **claims}
    return jwt.encode({"alg": alg, "kid": "k1"}, {k: v for k, v in body.items() if v is not None}, key)


def _validate(client: OidcClient, token: str, nonce: str = "n1") -> dict:
    client._key_set = _no_refresh(client)  # type: ignore[method-assign]
    return asyncio.run(client.validate_id_token(token, nonce))


def _no_refresh(client: OidcClient):
    async def key_set(refresh: bool = False) -> KeySet:
        return client._keys
    return key_set


def test_id_token_valid() -> None:
    assert _validate(_client(), _token())["email"] == "ana@example.com"


@pytest.mark.parametrize(("token", "nonce", "problem"), [
    (lambda: _token(nonce="other"), "n1", "nonce"),
    (lambda: _token(), "n2", "nonce"),
    (lambda: _token(nonce=None), "n1", "nonce"),
    (lambda: _token(aud="someone-else"), "n1", "aud"),
    (lambda: _token(iss="https://evil.example.com"), "n1", "iss"),
    (lambda: _token(exp=int(time.time()) - 3600), "n1", "exp"),
    (lambda: _token(exp=None), "n1", "exp"),
    (lambda: _token(key=OTHER_KEY), "n1", "signature"),
    (lambda: _token(aud=["e2i-ui", "other"]), "n1", "azp"),
])
def test_id_token_refused(token, nonce: str, problem: str) -> None:
    with pytest.raises(OidcError, match=problem):
        _validate(_client(), token(), nonce)


def test_id_token_unsigned_or_hmac_refused() -> None:
    import base64
    import json

    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "e2i-ui", "sub": "u1", "nonce": "n1", "exp": now + 300}
    unsigned = f"{b64({'alg': 'none'})}.{b64(claims)}."
    with pytest.raises(OidcError, match="signature"):
        _validate(_client(), unsigned)


# --- /auth/check -----------------------------------------------------------------------------

@pytest.fixture()
def check_client() -> TestClient:
    app = FastAPI()
    app.state.settings = Settings(_env_file=None, oidc=oidc())
    app.include_router(router)
    return TestClient(app, base_url="https://testserver", follow_redirects=False)


def test_check_with_session_gives_identity_headers(check_client: TestClient) -> None:
    codec = CookieCodec(SECRET, 3600)
    cookie = codec.dump_session(Identity("ana@example.com", "viewer"))
    response = check_client.get("/auth/check", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
    assert response.status_code == 200
    assert response.headers["X-E2I-User"] == "ana@example.com" and response.headers["X-E2I-Role"] == "viewer"


def test_check_without_session(check_client: TestClient) -> None:
    assert check_client.get("/auth/check", headers={"Accept": "application/json"}).status_code == 401
    page = check_client.get("/auth/check", headers={"Accept": "text/html", "X-Forwarded-Method": "GET",
                                                    "X-Forwarded-Uri": "/runs?x=1"})
    assert page.status_code == 302 and page.headers["location"] == "/auth/login?next=%2Fruns%3Fx%3D1"
    post = check_client.get("/auth/check", headers={"Accept": "text/html", "X-Forwarded-Method": "POST"})
    assert post.status_code == 401
    # identity headers sent by the client are not an identity
    forged = check_client.get("/auth/check", headers={"X-E2I-User": "boss", "X-E2I-Role": "admin"})
    assert forged.status_code == 401 and "X-E2I-User" not in forged.headers


def test_check_with_expired_or_tampered_session(check_client: TestClient) -> None:
    class NineHoursAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 9 * 3600

    expired = URLSafeTimedSerializer(SECRET, salt="e2i-session", signer=NineHoursAgo).dumps(
        {"u": "ana", "r": "admin"})
    codec = CookieCodec(SECRET, 3600)
    assert CookieCodec(SECRET, 10 * 3600).load_session(expired) is not None  # signed right, only old
    assert check_client.get("/auth/check", headers={"Cookie": f"{SESSION_COOKIE}={expired}"}).status_code == 401
    valid = codec.dump_session(Identity("ana", "viewer"))
    tampered = valid.replace(valid.split(".")[0], URLSafeTimedSerializer(SECRET).dump_payload(
        {"u": "ana", "r": "admin"}).decode())
    assert check_client.get("/auth/check", headers={"Cookie": f"{SESSION_COOKIE}={tampered}"}).status_code == 401


def test_login_not_configured_is_503() -> None:
    app = FastAPI()
    app.state.settings = Settings(_env_file=None)
    app.include_router(router)
    client = TestClient(app, base_url="https://testserver", follow_redirects=False)
    assert client.get("/auth/login").status_code == 503
    assert client.get("/auth/check", headers={"Accept": "text/html"}).status_code == 401


@pytest.mark.parametrize(("value", "expected"), [
    ("/runs/abc?x=1", "/runs/abc?x=1"), ("//evil.example.com/x", "/"), ("https://evil.example.com", "/"),
    ("/\\evil.example.com", "/"), ("/a\r\nSet-Cookie: x", "/"), (None, "/"), ("", "/"),
])
def test_local_path(value, expected: str) -> None:
    assert local_path(value) == expected
