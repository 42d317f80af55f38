"""Idempotent run submission: one run per (API client, Idempotency-Key), across API processes.

The key is stored on the run itself as run tags (``e2i/idempotency-key`` plus the client name and
a fingerprint of the request), so the mapping lives in Dagster's run storage: durable, restart-safe,
and visible in the Dagster UI. A retry looks the run up by those tags: in the run storage when the
API has the instance's database (``run_store``), else over GraphQL.

"Look up the key, else launch" must not interleave for one key. The run (with its tags) is in
storage before ``launchRun`` returns, so holding a per-key lock over lookup and launch is enough:

- ``KeyLocks``: an ``asyncio.Lock`` per key, for a single API process (embedded SQLite default);
- ``PostgresKeyLocks``: the same, plus a transaction-scoped advisory lock on the key in the
  instance's Postgres (``E2I_API_DATABASE_URL``), so any number of API workers and hosts agree.

A request whose key is held by a request still launching waits (up to ``wait_seconds``) and then
replays that run; past the wait it gets ``KeyStillLaunching`` (HTTP 409, retry later).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_TAG = "e2i/idempotency-key"
CLIENT_TAG = "e2i/api-client"
REQUEST_HASH_TAG = "e2i/request-sha256"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")


class IdempotencyKeyReused(Exception):
    """The key was already used by this client for a different request."""


class KeyStillLaunching(Exception):
    """Another request with the same key held it longer than the wait allows."""


class IdempotencyStoreUnavailable(Exception):
    """The database that serialises keys across processes cannot be reached."""


def fingerprint(job: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
    """SHA-256 of the canonical request (job, validated params, user tags)."""
    canonical = json.dumps({"job": job, "params": params, "tags": tags}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def advisory_key(key: str) -> int:
    """A signed 64-bit advisory-lock id for ``key`` (first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


class RunLookup(Protocol):
    async def list_runs(self, *, tags: dict[str, str], limit: int) -> list[dict[str, Any]]: ...


class KeyLock(Protocol):
    """Serialises the holders of one key."""

    def hold(self, key: str) -> Any:  # an async context manager
        ...

    def close(self) -> None:
        ...


class KeyLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it (one process only)."""

    def __init__(self, wait_seconds: float | None = None) -> None:
        self.wait_seconds = wait_seconds
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str, timeout: float | None = None) -> AsyncIterator[None]:
        timeout = self.wait_seconds if timeout is None else timeout
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            try:
                await asyncio.wait_for(lock.acquire(), timeout)
            except TimeoutError:
                raise KeyStillLaunching(f"{IDEMPOTENCY_HEADER} is held by a request still launching "
                                        f"after {timeout:g}s; retry later") from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)

    def close(self) -> None:
        """Nothing to release: the locks live in this process."""


class ConnectionPool:
    """psycopg2 connections for the key locks: at most ``keep`` idle ones are kept open (so a
    launch does not pay for a new connection), more are opened when needed and closed after."""

    def __init__(self, dsn: str, keep: int, connect_timeout: int) -> None:
        self.dsn, self.keep, self.connect_timeout = dsn, keep, connect_timeout
        self._idle: list[Any] = []
        self._mutex = threading.Lock()

    def get(self) -> Any:
        import psycopg2

        with self._mutex:
            if self._idle:
                return self._idle.pop()
        return psycopg2.connect(self.dsn, connect_timeout=self.connect_timeout,
                                application_name="e2i-api-idempotency")

    def put(self, conn: Any) -> None:
        """Roll back (ending the transaction releases its advisory lock) and keep or close."""
        try:
            conn.rollback()
        except Exception:  # noqa: BLE001 - a broken connection: closing it releases the lock too
            conn.close()
            return
        with self._mutex:
            if len(self._idle) < self.keep:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._mutex:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class PostgresKeyLocks:
    """Per-key lock across processes: ``pg_try_advisory_xact_lock`` held in an open transaction.

    Within a process the ``KeyLocks`` queue comes first, so only one request per key and process
    polls Postgres. Polling (not the blocking ``pg_advisory_xact_lock``) keeps waiters off the
    thread pool. The lock goes with the transaction: released on rollback, or when the process
    or its connection dies. At most ``max_connections`` keys are held at once per process.
    """

    def __init__(self, dsn: str, wait_seconds: float = 30.0, max_connections: int = 16,
                 poll_seconds: float = 0.02, connect_timeout: int = 5) -> None:
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.max_connections = max_connections
        # Every slot's connection is kept: a new one costs Postgres a backend and an auth handshake.
        self._pool = ConnectionPool(dsn, keep=max_connections, connect_timeout=connect_timeout)
        self._local = KeyLocks()
        self._slots: asyncio.Semaphore | None = None

    def _try_lock(self, conn: Any, lock_id: int) -> bool:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (lock_id,))
            return bool(cur.fetchone()[0])

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        import psycopg2

        deadline = time.monotonic() + self.wait_seconds
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        async with self._local.hold(key, timeout=self.wait_seconds), self._slots:
            try:
                conn = await asyncio.to_thread(self._pool.get)
            except psycopg2.Error as exc:
                raise IdempotencyStoreUnavailable(f"idempotency database unreachable: {exc}".strip()) from exc
            try:
                await self._acquire(conn, key, deadline)
                yield
            finally:
                await asyncio.to_thread(self._pool.put, conn)

    async def _acquire(self, conn: Any, key: str, deadline: float) -> None:
        import psycopg2

        lock_id, pause = advisory_key(key), self.poll_seconds
        while True:
            try:
                if await asyncio.to_thread(self._try_lock, conn, lock_id):
                    return
            except psycopg2.Error as exc:
                raise IdempotencyStoreUnavailable(f"idempotency lock failed: {exc}".strip()) from exc
            if time.monotonic() >= deadline:
                raise KeyStillLaunching(f"{IDEMPOTENCY_HEADER} is held by a request still launching "
                                        f"after {self.wait_seconds:g}s; retry later")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)

    def close(self) -> None:
        self._pool.close()


def make_key_locks(database_url: str | None, wait_seconds: float) -> KeyLocks | PostgresKeyLocks:
    """Postgres-backed locks when a database is configured, else the in-process ones."""
    if database_url:
        return PostgresKeyLocks(database_url, wait_seconds=wait_seconds)
    return KeyLocks(wait_seconds=wait_seconds)


async def launch_once(client: RunLookup, locks: KeyLock, *, client_name: str, key: str,
                      request_hash: str, launch: Callable[[dict[str, str]], Awaitable[dict[str, Any]]],
                      ) -> tuple[dict[str, Any], bool]:
    """Return (run, replayed): the run made earlier with ``key`` or the new one from ``launch``.

    ``client`` finds runs by tags (the run storage when the API has the database, else GraphQL);
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
