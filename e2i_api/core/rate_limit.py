"""Per-key rate limits, shared by every API worker: 429 with ``Retry-After``.

Keyed on the authenticated principal, not the client address: every key of a client shares its
budget. Reads and writes (any method but GET/HEAD/OPTIONS) have separate budgets. UI logins
(``/auth/login``, ``/auth/callback``) have their own budget per client IP address.

Counting is a fixed window (``N/minute``: at most N admitted per clock minute; across a window's
edge a burst of up to 2N is possible). With a database (``E2I_API_DATABASE_URL``, required for
more than one worker) the counters are rows of ``e2i_api.rate_limits`` updated by one
parameterised upsert, so every worker and every API process on that database share one limit;
without one they live in this process (one worker). A refused request is not counted. When the
database cannot be reached the request is refused (503), never let through uncounted.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import psycopg2
from fastapi import HTTPException, status
from limits import RateLimitItem, parse

from e2i_api.pg_async import AsyncPool

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_LIMIT = "30/minute"  # login starts + IdP callbacks per client IP (a login takes two)
TABLE = "e2i_api.rate_limits"
"""Created by docker/postgres/roles.sql on the stack (the API role may not run DDL there), else by
the API at its first hit."""
CREATE = ("CREATE SCHEMA IF NOT EXISTS e2i_api; "
          "CREATE TABLE IF NOT EXISTS e2i_api.rate_limits (bucket text NOT NULL, "
          "window_start bigint NOT NULL, hits integer NOT NULL, PRIMARY KEY (bucket, window_start))")
HIT = ("INSERT INTO e2i_api.rate_limits AS r (bucket, window_start, hits) "
       "VALUES (%(bucket)s, %(window)s, 1) ON CONFLICT (bucket, window_start) "
       "DO UPDATE SET hits = r.hits + 1 WHERE r.hits < %(limit)s RETURNING hits")
PRUNE = ("WITH gone AS (DELETE FROM e2i_api.rate_limits WHERE window_start < %(before)s RETURNING 1) "
         "SELECT count(*) FROM gone")
PRUNE_EVERY = 500  # hits of a process between deletions of windows over a day old
DAY = 86_400


@dataclass
class MemoryWindows:
    """Window counters of this process."""

    hits: dict[tuple[str, int], int] = field(default_factory=dict)
    count: int = 0

    async def hit(self, bucket: str, window: int, limit: int) -> bool:
        self.count += 1
        if self.count % PRUNE_EVERY == 0:
            self.hits = {k: v for k, v in self.hits.items() if k[1] >= window - DAY}
        hits = self.hits.get((bucket, window), 0)
        if hits >= limit:
            return False
        self.hits[(bucket, window)] = hits + 1
        return True


class PostgresWindows:
    """Window counters in Postgres, shared by every process on the database."""

    def __init__(self, dsn: str) -> None:
        self.pool = AsyncPool(dsn, size=4, application_name="e2i-api-rate-limit")
        self._ready = False
        self._lock: asyncio.Lock | None = None
        self._count = 0

    async def _ensure_table(self) -> None:
        if self._ready:
            return
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if not self._ready:
                if not await self._exists():
                    try:
                        await self.pool.fetchall(CREATE + "; SELECT 1", [])
                    except psycopg2.Error:  # another process created it first, else a real error
                        if not await self._exists():
                            raise
                self._ready = True

    async def _exists(self) -> bool:
        _, rows = await self.pool.fetchall("SELECT to_regclass(%s) IS NOT NULL", [TABLE])
        return bool(rows[0][0])

    async def hit(self, bucket: str, window: int, limit: int) -> bool:
        await self._ensure_table()
        _, rows = await self.pool.fetchall(HIT, {"bucket": bucket, "window": window, "limit": limit})
        self._count += 1
        if self._count % PRUNE_EVERY == 0:
            await self.pool.fetchall(PRUNE, {"before": window - DAY})
        return bool(rows)


class RateLimits:
    """The read and write limits of every key (``check``) and the login limit (``check_login``)."""

    def __init__(self, read: str, write: str, database_url: str | None = None,
                 login: str = LOGIN_LIMIT) -> None:
        self.read, self.write, self.login = parse(read), parse(write), parse(login)
        self._windows = PostgresWindows(database_url) if database_url else MemoryWindows()

    async def check(self, client: str, method: str) -> None:
        """Count one request of ``client``; 429 with Retry-After when over its limit."""
        kind = "read" if method.upper() in READ_METHODS else "write"
        item = self.read if kind == "read" else self.write
        await self._hit(item, f"{kind}:{client}",
                        f"rate limit of {item} for {kind} requests exceeded for API client {client!r}")

    async def check_login(self, client_ip: str) -> None:
        """Count one login request from ``client_ip``; 429 with Retry-After when over the limit."""
        await self._hit(self.login, f"login:{client_ip}",
                        f"too many login attempts from this address (limit {self.login}): try again later")

    async def _hit(self, item: RateLimitItem, bucket: str, message: str) -> None:
        period = item.get_expiry()
        now = time.time()
        window = int(now // period) * period
        try:
            admitted = await self._windows.hit(bucket, window, item.amount)
        except psycopg2.Error:  # fail closed, naming no address or error text
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                "rate limiter unavailable (its database): retry shortly",
                                headers={"Retry-After": "5"}) from None
        if admitted:
            return
        retry_after = max(1, math.ceil(window + period - now))
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, message,
                            headers={"Retry-After": str(retry_after)})
