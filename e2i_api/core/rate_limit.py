"""Per-key rate limits (slowapi's limiter, moving window): 429 with ``Retry-After``.

Keyed on the authenticated principal, not the client address: every key of a client shares its
budget. Reads and writes (any method but GET/HEAD/OPTIONS) have separate budgets. The storage is
``memory://`` by default, one per worker process (n workers admit up to n times the limit); a
shared storage such as ``redis://host:6379`` can be set with ``E2I_API_RATE_LIMIT_STORAGE_URI``.
UI logins (``/auth/login``, ``/auth/callback``) have their own budget per client IP address.
"""

from __future__ import annotations

import math
import time

from fastapi import HTTPException, status
from limits import RateLimitItem, parse
from slowapi import Limiter

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_LIMIT = "30/minute"  # login starts + IdP callbacks per client IP (a login takes two)


class RateLimits:
    """The read and write limits of every key (``check``) and the login limit (``check_login``)."""

    def __init__(self, read: str, write: str, storage_uri: str = "memory://",
                 login: str = LOGIN_LIMIT) -> None:
        self.read, self.write, self.login = parse(read), parse(write), parse(login)
        self._limiter = Limiter(key_func=lambda: "", storage_uri=storage_uri, strategy="moving-window")

    def check(self, client: str, method: str) -> None:
        """Count one request of ``client``; 429 with Retry-After when over its limit."""
        kind = "read" if method.upper() in READ_METHODS else "write"
        item = self.read if kind == "read" else self.write
        self._hit(item, (kind, client),
                  f"rate limit of {item} for {kind} requests exceeded for API client {client!r}")

    def check_login(self, client_ip: str) -> None:
        """Count one login request from ``client_ip``; 429 with Retry-After when over the limit."""
        self._hit(self.login, ("login", client_ip),
                  f"too many login attempts from this address (limit {self.login}): try again later")

    def _hit(self, item: RateLimitItem, keys: tuple[str, str], message: str) -> None:
        limiter = self._limiter.limiter
        if limiter.hit(item, "e2i-api", *keys):
            return
        reset, _ = limiter.get_window_stats(item, "e2i-api", *keys)
        retry_after = max(1, math.ceil(reset - time.time()))
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, message,
                            headers={"Retry-After": str(retry_after)})
