"""API-key authentication and scope checks (X-API-Key header, constant-time comparison)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader

from e2i_api.core.config import ApiKeySpec, Scope
from e2i_api.idempotency import CLIENT_TAG
from e2i_pipelines.tiers import Tier

API_KEY_HEADER = "X-API-Key"
api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                              description="API key; scopes runs:read, runs:write, admin")


@dataclass(frozen=True)
class Principal:
    """The client a request authenticated as."""

    name: str
    scopes: frozenset[str]
    jobs: frozenset[str] | None = None
    max_tier: Tier = Tier.HEAVY

    @property
    def is_admin(self) -> bool:
        """Admin keys see every client's runs, results and costs."""
        return "admin" in self.scopes

    @property
    def run_tags(self) -> dict[str, str] | None:
        """Tag filter of the runs this principal may list: its client's, or None (all) for admin."""
        return None if self.is_admin else {CLIENT_TAG: self.name}

    def owns(self, tags: dict[str, str]) -> bool:
        """True when a run with ``tags`` is visible to this principal."""
        return self.is_admin or tags.get(CLIENT_TAG) == self.name

    def check_launch(self, job: str, tier: Tier) -> None:
        """403 when the key may not launch ``job`` (allowlist) or its ``tier`` (max_tier)."""
        if self.jobs is not None and job not in self.jobs:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"API key {self.name!r} may not launch job {job!r}")
        if tier.rank > self.max_tier.rank:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"job {job!r} is tier {tier.value}; API key {self.name!r} is limited to "
                                f"tier {self.max_tier.value}")


class KeyRing:
    """Configured keys as SHA-256 digests; ``match`` compares every digest in constant time."""

    def __init__(self, specs: Sequence[ApiKeySpec]) -> None:
        self._entries = [(spec.digest(), Principal(spec.name, frozenset(spec.scopes),
                                                   frozenset(spec.jobs) if spec.jobs is not None else None,
                                                   spec.max_tier)) for spec in specs]

    def match(self, presented: str) -> Principal | None:
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for stored, principal in self._entries:  # no early exit: time does not depend on position
            if hmac.compare_digest(digest, stored):
                found = principal
        return found


async def authenticate(request: Request, api_key: Annotated[str | None, Depends(api_key_header)]) -> Principal:
    """The principal for the request's API key; 401 when missing or unknown."""
    if not api_key:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"missing API key ({API_KEY_HEADER} header)",
                            headers={"WWW-Authenticate": "ApiKey"})
    principal = request.app.state.keyring.match(api_key)
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key",
                            headers={"WWW-Authenticate": "ApiKey"})
    request.state.principal = principal  # for the audit log
    await request.app.state.rate_limits.check(principal.name, request.method)
    return principal


def require_scope(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """Dependency: an authenticated principal holding ``scope`` (403 otherwise). Async, like
    ``authenticate``: no I/O, so they run on the event loop, not in FastAPI's thread pool."""

    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if scope not in principal.scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"API key {principal.name!r} lacks scope {scope!r}")
        return principal

    return dependency
