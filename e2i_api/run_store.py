"""Run fields read straight from the instance's PostgreSQL run storage, and finished-run results
kept per worker: status polls and results reads that do not queue behind the webserver.

Dagster's own ``PostgresRunStorage`` builds the query and deserializes the record (no SQL of
ours against its tables); the fields come back in the shape of the GraphQL ``Run`` the rest of
the API uses. A status poll is read on the event loop over a kept asynchronous connection
(``pg_async``), so it never queues behind other blocking work of the worker nor waits for a
thread. Without a database (embedded SQLite instance) the API reads runs over GraphQL as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from dagster import DagsterRunStatus, RunRecord, RunsFilter
from dagster._core.storage.tags import TagType, get_tag_type
from dagster._time import utc_datetime_from_naive
from dagster_postgres import PostgresRunStorage
from dagster_postgres.utils import create_pg_engine, set_pg_statement_timeout
from sqlalchemy import event, make_url

from e2i_api.dagster_client import DagsterUnavailableError, RunNotFound
from e2i_api.pg_async import AsyncPool
from e2i_api.single_flight import SingleFlight

# As in dagster_graphql.schema.pipelines.pipeline (the Run type's time resolvers).
COMPLETED_STATUSES = frozenset({DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED})
STARTED_STATUSES = COMPLETED_STATUSES | {DagsterRunStatus.STARTED, DagsterRunStatus.SUSPENDED}
_RUN_ID_SLOT = "e2i-run-id-slot"  # stands for the run id while the status query is compiled


class RunReader(Protocol):
    async def get_run(self, run_id: str) -> dict[str, Any]: ...

    async def list_runs(self, *, tags: dict[str, str], limit: int,
                        statuses: Sequence[str] = ()) -> list[dict[str, Any]]: ...


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


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Any failure of a read as ``DagsterUnavailableError``: the instance's storage is down."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - any storage failure: Dagster's storage is down
        raise DagsterUnavailableError(f"the instance's run storage is unreachable: {exc}") from None


def run_record(storage: Any, row: dict[str, Any]) -> RunRecord:
    """A row of the runs table as Dagster's ``get_run_records`` builds its ``RunRecord``."""
    return RunRecord(
        storage_id=row["id"], dagster_run=storage._row_to_run(row),
        create_timestamp=utc_datetime_from_naive(row["create_timestamp"]),
        update_timestamp=utc_datetime_from_naive(row["update_timestamp"]),
        start_time=row.get("start_time"), end_time=row.get("end_time"),
    )


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

    Status reads run on the event loop: Dagster's own query for one run (built and compiled
    once), sent over ``status_connections`` asynchronous connections, rows turned into a
    ``RunRecord`` by Dagster's deserializer. Concurrent reads of the same run share one in-flight
    read (``SingleFlight``); nothing is cached beyond it. The Idempotency-Key lookups of
    submissions (``list_runs``) read through the storage in their own ``lookup_threads``."""

    def __init__(self, database_url: str, fallback: RunReader | None = None, status_connections: int = 4,
                 lookup_threads: int = 2) -> None:
        self.url = sqlalchemy_url(database_url)
        self.fallback = fallback
        self.lookup_threads = lookup_threads
        self._storage: Any = None
        self._storage_lock = threading.Lock()
        self._status_query: tuple[str, dict[str, Any], str] | None = None
        self._lookups = ThreadPoolExecutor(lookup_threads, thread_name_prefix="e2i-run-lookup")
        self._pool = AsyncPool(make_url(self.url).set(drivername="postgresql").render_as_string(False),
                               size=status_connections)
        self.reads: SingleFlight[list[Any]] = SingleFlight()

    def _storage_for_reads(self) -> ReaderRunStorage:
        with self._storage_lock:
            if self._storage is None:
                storage = ReaderRunStorage(self.url, should_autocreate_tables=False)
                storage.pool_for_readers(self.lookup_threads)
                self._storage = storage
        return self._storage

    def _compile_status_query(self) -> tuple[str, dict[str, Any], str]:
        """The SQL ``get_run_records(RunsFilter(run_ids=[id]), limit=1)`` sends, its parameters
        and the name of the run id's parameter."""
        storage = self._storage_for_reads()
        columns = ["id", "run_body", "status", "create_timestamp", "update_timestamp"]
        if storage.has_run_stats_index_cols():
            columns += ["start_time", "end_time"]
        compiled = storage._runs_query(filters=RunsFilter(run_ids=[_RUN_ID_SLOT]), limit=1,
                                       columns=columns).compile(
            dialect=storage._engine.dialect, compile_kwargs={"render_postcompile": True})
        params = dict(compiled.params)
        return str(compiled), params, next(k for k, v in params.items() if v == _RUN_ID_SLOT)

    def _records(self, filters: RunsFilter, limit: int) -> list[Any]:
        return list(self._storage_for_reads().get_run_records(filters, limit=limit))

    async def _status_records(self, run_id: str) -> list[Any]:
        with storage_errors():
            if self._status_query is None:
                self._status_query = await asyncio.get_running_loop().run_in_executor(
                    self._lookups, self._compile_status_query)
            sql, params, slot = self._status_query
            columns, rows = await self._pool.fetchall(sql, {**params, slot: run_id})
        return [run_record(self._storage, dict(zip(columns, row, strict=True))) for row in rows]

    def close(self) -> None:
        """Stop the lookup threads and close the idle status connections (the storage's pooled
        connections close with the process)."""
        self._lookups.shutdown(wait=False, cancel_futures=True)
        self._pool.close()

    async def list_runs(self, *, tags: dict[str, str], limit: int,
                        statuses: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Runs with all of ``tags`` (and one of ``statuses``, if given), newest first (as
        ``DagsterClient.list_runs``)."""
        run_filter = RunsFilter(tags=tags, statuses=[DagsterRunStatus(s) for s in statuses] or None)
        with storage_errors():
            records = await asyncio.get_running_loop().run_in_executor(
                self._lookups, self._records, run_filter, limit)
        return [run_fields(r) for r in records]

    async def get_run(self, run_id: str) -> dict[str, Any]:
        records = await self.reads.run(run_id, lambda: self._status_records(run_id))
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
