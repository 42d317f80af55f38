"""Run fields read straight from the instance's PostgreSQL run storage, and finished-run results
kept per worker: status polls and results reads that do not queue behind the webserver.

Dagster's own ``PostgresRunStorage`` reads the record (no SQL of ours against its tables); the
fields come back in the shape of the GraphQL ``Run`` the rest of the API uses. Reads run in the
reader's own threads, each with a kept connection, so a status poll never queues behind other
blocking work of the worker. Without a database (embedded SQLite instance) the API reads runs
over GraphQL as before.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from dagster import DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import TagType, get_tag_type
from dagster_postgres import PostgresRunStorage
from dagster_postgres.utils import create_pg_engine, set_pg_statement_timeout
from sqlalchemy import event

from e2i_api.dagster_client import DagsterUnavailableError, RunNotFound

# As in dagster_graphql.schema.pipelines.pipeline (the Run type's time resolvers).
COMPLETED_STATUSES = frozenset({DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED})
STARTED_STATUSES = COMPLETED_STATUSES | {DagsterRunStatus.STARTED, DagsterRunStatus.SUSPENDED}


class RunReader(Protocol):
    async def get_run(self, run_id: str) -> dict[str, Any]: ...

    async def list_runs(self, *, tags: dict[str, str], limit: int) -> list[dict[str, Any]]: ...


def sqlalchemy_url(database_url: str) -> str:
    """``postgresql://`` as SQLAlchemy needs it for psycopg2 (plain maps to psycopg 3)."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg2://" + database_url[len(prefix):]
    return database_url


def needs_run_stats(record: Any) -> bool:
    """GraphQL fills a start/end time the record lacks from the run's event stats (a run that
    ended without starting, e.g. canceled while queued): such runs are read over GraphQL."""
    status = record.dagster_run.status
    return ((record.start_time is None and record.end_time is None and status in STARTED_STATUSES)
            or (record.end_time is None and status in COMPLETED_STATUSES))


def run_fields(record: Any) -> dict[str, Any]:
    """A dagster ``RunRecord`` as the GraphQL ``Run`` fields (dagster-graphql's resolvers:
    visible tags only; cancelable while QUEUED or STARTED)."""
    run = record.dagster_run
    start = record.start_time
    if start is None and run.status in STARTED_STATUSES:
        start = record.end_time  # failed to start: it has an end time and no start time
    return {
        "runId": run.run_id, "jobName": run.job_name, "status": run.status.value,
        "creationTime": record.create_timestamp.timestamp(), "startTime": start,
        "endTime": record.end_time, "updateTime": record.update_timestamp.timestamp(),
        "canTerminate": run.status in (DagsterRunStatus.QUEUED, DagsterRunStatus.STARTED),
        "tags": [{"key": k, "value": v} for k, v in run.tags.items() if get_tag_type(k) != TagType.HIDDEN],
    }


class ReaderRunStorage(PostgresRunStorage):
    """Dagster's Postgres run storage for a long-lived reader: the schema check that
    ``get_run_records`` makes on every call (a catalog query) is made once, and every reader
    thread keeps its own pooled connection."""

    def pool_for_readers(self, threads: int, statement_timeout_ms: int = 5000, pool_recycle: int = 3600) -> None:
        """Dagster's ``optimize_for_webserver`` (autocommit, statement timeout), but with one
        kept connection per reader thread: the webserver's pool keeps one and opens and closes
        every other, a new Postgres backend and auth handshake per concurrent read."""
        kwargs: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "pool_size": threads, "max_overflow": 0,
                                  "pool_recycle": pool_recycle}
        if self._engine.url.query.get("options"):
            kwargs["connect_args"] = {"options": self._engine.url.query["options"]}
        self._engine = create_pg_engine(self.postgres_url, self._token_provider, **kwargs)
        event.listen(self._engine, "connect",
                     lambda connection, _: set_pg_statement_timeout(connection, statement_timeout_ms))

    @functools.cached_property
    def _run_stats_index_cols(self) -> bool:
        return super().has_run_stats_index_cols()

    def has_run_stats_index_cols(self) -> bool:
        return self._run_stats_index_cols


class StorageRuns:
    """``get_run`` from the run storage of the instance's Postgres (``database_url``);
    ``fallback`` (the GraphQL client) answers for the few runs GraphQL completes from stats.
    Status reads (``threads``) and the Idempotency-Key lookups of submissions
    (``lookup_threads``) have their own threads: a poll never waits behind a submission."""

    def __init__(self, database_url: str, fallback: RunReader | None = None, threads: int = 4,
                 lookup_threads: int = 2) -> None:
        self.url = sqlalchemy_url(database_url)
        self.fallback = fallback
        self.connections = threads + lookup_threads
        self._storage: Any = None
        self._storage_lock = threading.Lock()
        self._status = ThreadPoolExecutor(threads, thread_name_prefix="e2i-run-status")
        self._lookups = ThreadPoolExecutor(lookup_threads, thread_name_prefix="e2i-run-lookup")

    def _records(self, filters: RunsFilter, limit: int) -> list[Any]:
        with self._storage_lock:
            if self._storage is None:
                storage = ReaderRunStorage(self.url, should_autocreate_tables=False)
                storage.pool_for_readers(self.connections)
                self._storage = storage
        return list(self._storage.get_run_records(filters, limit=limit))

    async def _read(self, filters: RunsFilter, limit: int, threads: ThreadPoolExecutor) -> list[Any]:
        try:
            return await asyncio.get_running_loop().run_in_executor(threads, self._records, filters, limit)
        except Exception as exc:  # noqa: BLE001 - any storage failure: Dagster's storage is down
            raise DagsterUnavailableError(f"the instance's run storage is unreachable: {exc}") from None

    def close(self) -> None:
        """Stop the reader's threads (the storage's pooled connections close with the process)."""
        for threads in (self._status, self._lookups):
            threads.shutdown(wait=False, cancel_futures=True)

    async def list_runs(self, *, tags: dict[str, str], limit: int) -> list[dict[str, Any]]:
        """Runs with all of ``tags``, newest first (as ``DagsterClient.list_runs``)."""
        return [run_fields(r) for r in await self._read(RunsFilter(tags=tags), limit, self._lookups)]

    async def get_run(self, run_id: str) -> dict[str, Any]:
        records = await self._read(RunsFilter(run_ids=[run_id]), 1, self._status)
        if not records:
            raise RunNotFound(f"no run {run_id!r}")
        record = records[0]
        if self.fallback is not None and needs_run_stats(record):
            return await self.fallback.get_run(run_id)
        return run_fields(record)


class FinishedResults:
    """Results of finished runs (they no longer change), least recently used dropped first."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()

    def get(self, run_id: str) -> Any | None:
        if run_id in self._items:
            self._items.move_to_end(run_id)
        return self._items.get(run_id)

    def put(self, run_id: str, results: Any) -> None:
        self._items[run_id] = results
        self._items.move_to_end(run_id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
