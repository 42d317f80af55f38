"""Signed, expiring cookies: the session (user + role) and the short-lived login state.

Values are itsdangerous ``URLSafeTimedSerializer`` tokens (HMAC-SHA256 over JSON with a
timestamp): a tampered or expired cookie reads as None. The cookies are ``__Host-`` prefixed,
so the browser only accepts them as Secure, host-only, Path=/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadData, URLSafeTimedSerializer

from e2i_api.auth.roles import ROLES

SESSION_COOKIE = "__Host-e2i_session"
LOGIN_COOKIE = "__Host-e2i_login"
LOGIN_MAX_AGE = 600
# Printable, no separators a header or log line could be split on.
_SAFE_USER = re.compile(r"^[\x21-\x7e]{1,256}$")


@dataclass(frozen=True)
class Identity:
    """A logged-in person: name (the user claim) and role."""

    user: str
    role: str


def safe_user(user: str) -> bool:
    """Whether ``user`` can travel in a header and a run tag unchanged."""
    return bool(_SAFE_USER.match(user))


class CookieCodec:
    """Signs and reads the session and login-state cookies with one secret."""

    def __init__(self, secret: str, session_seconds: float) -> None:
        self._session = URLSafeTimedSerializer(secret, salt="e2i-session")
        self._login = URLSafeTimedSerializer(secret, salt="e2i-login")
        self.session_seconds = int(session_seconds)

    def dump_session(self, identity: Identity) -> str:
        return self._session.dumps({"u": identity.user, "r": identity.role})

    def load_session(self, value: str | None) -> Identity | None:
        """The identity of a valid, unexpired session cookie; None otherwise."""
        data = _loads(self._session, value, self.session_seconds)
        if not isinstance(data, dict):
            return None
        user, role = data.get("u"), data.get("r")
        if not isinstance(user, str) or not safe_user(user) or role not in ROLES:
            return None
        return Identity(user, role)

    def dump_login(self, state: dict[str, str]) -> str:
        return self._login.dumps(state)

    def load_login(self, value: str | None) -> dict[str, str] | None:
        """The login state (state, nonce, PKCE verifier, next path) if valid and recent."""
        data = _loads(self._login, value, LOGIN_MAX_AGE)
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return None
        return data


def _loads(serializer: URLSafeTimedSerializer, value: str | None, max_age: int) -> Any:
    if not value or len(value) > 4096:
        return None
    try:
        return serializer.loads(value, max_age=max_age)
    except BadData:
        return None
