"""Roles of people logged in to the UI, from ID-token claims or the configured mapping.

``viewer`` is routed by Caddy to the read-only webserver; ``editor`` and ``admin`` to the
writable one (docker/caddy/Caddyfile matches ``WRITABLE_ROLES``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from e2i_api.core.config import OidcSettings, Role

ROLES: tuple[Role, ...] = ("viewer", "editor", "admin")
WRITABLE_ROLES: frozenset[str] = frozenset({"editor", "admin"})
_RANK = {role: rank for rank, role in enumerate(ROLES)}


def claim_values(claims: Mapping[str, Any], name: str) -> list[str]:
    """A claim as a list of strings (a string, or a list of strings; anything else: empty)."""
    value = claims.get(name)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return []


def user_of(claims: Mapping[str, Any], settings: OidcSettings) -> str:
    """The person's name: the configured user claim, else ``sub``."""
    names = claim_values(claims, settings.user_claim) or claim_values(claims, "sub")
    return names[0] if names else ""


def resolve_role(claims: Mapping[str, Any], settings: OidcSettings) -> Role | None:
    """The highest role the claims or mappings grant; None when nothing grants one."""
    user = user_of(claims, settings)
    found: list[Role] = []
    if user in settings.user_roles:
        found.append(settings.user_roles[user])
    for value in claim_values(claims, settings.role_claim):
        if value in settings.role_map:
            found.append(settings.role_map[value])
        elif value in _RANK:
            found.append(value)  # type: ignore[arg-type]
    if not found and settings.default_role is not None:
        found.append(settings.default_role)
    return max(found, key=_RANK.__getitem__) if found else None


def can_write(role: str) -> bool:
    """Whether ``role`` is routed to the writable webserver."""
    return role in WRITABLE_ROLES
