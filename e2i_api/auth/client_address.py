"""The address of the person behind a request, as Caddy reports it."""

from __future__ import annotations

from starlette.types import Scope


def client_ip(scope: Scope) -> str:
    """The last ``X-Forwarded-For`` entry (the one Caddy adds; it ignores a client's own), else
    the peer address."""
    forwarded = dict(scope["headers"]).get(b"x-forwarded-for", b"").decode("latin-1")
    last = forwarded.rsplit(",", 1)[-1].strip()
    return last[:64] if last else (scope.get("client") or ("-",))[0]
