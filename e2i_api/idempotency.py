"""Idempotent run submission: one run per (API client, Idempotency-Key).

The key is stored on the run itself as run tags (``e2i/idempotency-key`` plus the client name and
a fingerprint of the request), so the mapping lives in Dagster's run storage: durable, restart-safe,
and visible in the Dagster UI, with no second database to keep in sync. A retry looks the run up
over GraphQL by those tags. Concurrent requests with the same key are serialised by a per-key
``asyncio.Lock``: the lookup and the launch happen under the lock, and the run (with its tags) is in
storage before ``launchRun`` returns, so the second request finds it. The lock is per process, so
run the API as one uvicorn worker (it is async and I/O bound) or route by key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from e2i_api.dagster_client import DagsterClient

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_TAG = "e2i/idempotency-key"
CLIENT_TAG = "e2i/api-client"
REQUEST_HASH_TAG = "e2i/request-sha256"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")


class IdempotencyKeyReused(Exception):
    """The key was already used by this client for a different request."""


def fingerprint(job: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
    """SHA-256 of the canonical request (job, validated params, user tags)."""
    canonical = json.dumps({"job": job, "params": params, "tags": tags}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class KeyLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


async def launch_once(client: DagsterClient, locks: KeyLocks, *, client_name: str, key: str,
                      request_hash: str, launch: Callable[[dict[str, str]], Awaitable[dict[str, Any]]],
                      ) -> tuple[dict[str, Any], bool]:
    """Return (run, replayed): the run made earlier with ``key`` or the new one from ``launch``.

    ``launch`` receives the idempotency tags to add to the run. Raises IdempotencyKeyReused when
    the earlier run was made from a different request.
    """
    tags = {IDEMPOTENCY_TAG: key, CLIENT_TAG: client_name}
    async with locks.hold(f"{client_name}\x00{key}"):
        existing = await client.list_runs(tags=tags, limit=20)
        if existing:
            run = existing[-1]  # newest first: the first run made with the key, not an OOM re-launch of it
            earlier = {t["key"]: t["value"] for t in run["tags"]}.get(REQUEST_HASH_TAG)
            if earlier != request_hash:
                raise IdempotencyKeyReused(
                    f"{IDEMPOTENCY_HEADER} {key!r} was already used for a different request (run {run['runId']})")
            return run, True
        return await launch({**tags, REQUEST_HASH_TAG: request_hash}), False
