"""Per-key rate limits (slowapi's limiter, moving window): 429 with ``Retry-After``.

Keyed on the authenticated principal, not the client address: every key of a client shares its
budget. Reads and writes (any method but GET/HEAD/OPTIONS) have separate budgets. The storage is
``memory://`` by default, one per worker process (n workers admit up to n times the limit); a
shared storage such as ``redis://host:6379`` can be set with ``E2I_API_RATE_LIMIT_STORAGE_URI``.
"""

from __future__ import annotations

import math
import time

from fastapi import HTTPException, status
from limits import parse
from slowapi import Limiter

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RateLimits:
    """The read and write limits of every key, checked by ``check``."""

    def __init__(self, read: str, write: str, storage_uri: str = "memory://") -> None:
        self.read, self.write = parse(read), parse(write)
        self._limiter = Limiter(key_func=lambda: "", storage_uri=storage_uri, strategy="moving-window")

    def check(self, client: str, method: str) -> None:
        """Count one request of ``client``; 429 with Retry-After when over its limit."""
        kind = "read" if method.upper() in READ_METHODS else "write"
        item = self.read if kind == "read" else self.write
        limiter = self._limiter.limiter
        if limiter.hit(item, "e2i-api", kind, client):
            return
        reset, _ = limiter.get_window_stats(item, "e2i-api", kind, client)
        retry_after = max(1, math.ceil(reset - time.time()))
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            f"rate limit of {item} for {kind} requests exceeded for API client {client!r}",
                            headers={"Retry-After": str(retry_after)})
