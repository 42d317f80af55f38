"""A dataset imported from a configured Postgres connection: a table or one read-only SELECT.

Rows stream through a server-side (named) cursor, ``CHUNK_ROWS`` at a time, into a staged local
Parquet file (hashed and capped by ``E2I_MAX_UPLOAD_BYTES`` as it is written), which is then
registered like an uploaded Parquet file (``datasets.register``): same manifest, schema summary
and content address, so the same rows give the same version. Memory holds about one chunk.

Layers against a query that writes or hangs: :func:`dataset_pg_query.check_query`; a session
with ``default_transaction_read_only`` and a ``SET TRANSACTION READ ONLY`` transaction that is
rolled back; the connection's role (the operator grants it only ``SELECT``; a superuser or a
member of ``pg_execute_server_program``/``pg_*_server_files`` is refused); the connection's
statement timeout, set by the session and again by ``SET LOCAL``, with a client-side cancel a
few seconds after it in case the server's is bypassed. Database errors are reported by
SQLSTATE, never by the server's message (which can quote data).
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg2 import sql

from e2i_pipelines.core import datasets as store
from e2i_pipelines.core.dataset_ingest import DatasetInvalid, check_names
from e2i_pipelines.core.dataset_pg_query import check_query, table_statement
from e2i_pipelines.core.dataset_pg_sources import PgSource, SourceConfigError, get_source

CHUNK_ROWS = 20_000
"""Rows per FETCH and per Parquet row group (fixed: the version depends on it)."""
CANCEL_GRACE_S = 5.0
CONNECT_TIMEOUT_S = 10
CURSOR = "e2i_dataset_import"
_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(), 20: pa.int64(), 21: pa.int64(), 23: pa.int64(), 26: pa.int64(),
    700: pa.float64(), 701: pa.float64(), 1700: pa.float64(),
    25: pa.string(), 1043: pa.string(), 1042: pa.string(), 19: pa.string(), 18: pa.string(),
    1082: pa.date32(), 1114: pa.timestamp("us"), 1184: pa.timestamp("us", tz="UTC")}
"""Postgres type OID -> Arrow type; any other type is stored as text."""
POWERFUL_ROLE = ("SELECT rolsuper OR pg_has_role(current_user, 'pg_execute_server_program', 'MEMBER') "
                 "OR pg_has_role(current_user, 'pg_write_server_files', 'MEMBER') "
                 "OR pg_has_role(current_user, 'pg_read_server_files', 'MEMBER') "
                 "FROM pg_roles WHERE rolname = current_user")
"""True for a login role that could run programs or touch server files: refused."""
_NUMERIC_AS_FLOAT = psycopg2.extensions.new_type(
    (1700,), "E2I_NUMERIC_FLOAT", lambda value, _cursor: None if value is None else float(value))


class SourceUnavailable(RuntimeError):
    """The connection could not be opened or broke (the message names only the connection)."""


class QueryFailed(DatasetInvalid):
    """The database refused the table or query, or its result cannot be stored; ``field`` is
    the request key it concerns."""

    def __init__(self, message: str, field: str = "query") -> None:
        super().__init__(message)
        self.field = field


class QueryTimeout(QueryFailed):
    """The statement ran past the connection's statement timeout."""


def import_postgres(client: str, name: str, connection: str, *, table: str | None = None,
                    query: str | None = None) -> tuple[dict[str, Any], bool]:
    """Import a table or a SELECT from ``connection`` as ``client``'s dataset ``name``; the
    manifest and whether the version is new (as :func:`datasets.register`)."""
    store.check_name(name)
    if (table is None) == (query is None):
        raise DatasetInvalid("give either 'table' or 'query'")
    statement = table_statement(table) if table is not None else check_query(query or "")
    source = get_source(connection)
    staged = store.StagedUpload(store.max_upload_bytes())
    try:
        stream_to_parquet(source, statement, _Sink(staged), "table" if table is not None else "query")
        version = staged.finish()
        return store.register(staged.path, version, staged.size, client, name)
    finally:
        staged.discard()


class _Sink(io.RawIOBase):
    """A write-only file over a StagedUpload (hashes and caps every byte) for ParquetWriter."""

    def __init__(self, staged: store.StagedUpload) -> None:
        super().__init__()
        self._staged = staged
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._staged.write(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position


def stream_to_parquet(source: PgSource, statement: sql.Composable, out: Any, field: str = "query") -> int:
    """Run ``statement`` read-only on ``source`` and write its rows as Parquet to ``out``; the
    number of rows. No rows, or a database refusal, is a QueryFailed about ``field``."""
    conn = _connect(source)
    try:
        psycopg2.extensions.register_type(_NUMERIC_AS_FLOAT, conn)
        with conn.cursor() as setup:
            setup.execute("SET TRANSACTION READ ONLY")
            setup.execute("SET LOCAL statement_timeout = %s", (_millis(source),))
            setup.execute(POWERFUL_ROLE)
            if setup.fetchone()[0]:
                raise SourceConfigError(f"connection {source.name!r} logs in as a superuser or a role "
                                        "that may run programs or touch server files; give it a read-only role")
        cursor = conn.cursor(name=CURSOR)
        with _cancel_after(conn, source):
            cursor.execute(statement)
            rows = cursor.fetchmany(CHUNK_ROWS)
        try:
            schema = _schema(cursor.description)
        except DatasetInvalid as exc:
            raise QueryFailed(str(exc), field) from None
        if not rows:
            raise QueryFailed("the table or query returned no rows (nothing to store)", field)
        total = 0
        with pq.ParquetWriter(out, schema) as writer:
            while rows:
                writer.write_batch(_batch(rows, schema, cursor.description, field))
                total += len(rows)
                with _cancel_after(conn, source):
                    rows = cursor.fetchmany(CHUNK_ROWS)
        return total
    except psycopg2.Error as exc:
        raise _refusal(exc, source, field) from None
    finally:
        _close(conn)


def _connect(source: PgSource) -> Any:
    options = (f"-c default_transaction_read_only=on -c statement_timeout={_millis(source)} "
               "-c standard_conforming_strings=on -c timezone=UTC")
    try:
        return psycopg2.connect(
            host=source.host, port=source.port, dbname=source.dbname, user=source.user,
            password=source.password(), sslmode=source.sslmode, connect_timeout=CONNECT_TIMEOUT_S,
            application_name="e2i-dataset-import", options=options)
    except psycopg2.Error:
        raise SourceUnavailable(f"could not connect to Postgres connection {source.name!r}") from None


def _millis(source: PgSource) -> int:
    return max(1, round(source.statement_timeout_s * 1000))


@contextmanager
def _cancel_after(conn: Any, source: PgSource) -> Iterator[None]:
    """Cancel the running statement from this side a little after the server's own timeout."""
    timer = threading.Timer(source.statement_timeout_s + CANCEL_GRACE_S, conn.cancel)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _close(conn: Any) -> None:
    with suppress(psycopg2.Error):
        conn.rollback()
    conn.close()


def _refusal(exc: psycopg2.Error, source: PgSource, field: str) -> Exception:
    """A QueryFailed (or SourceUnavailable) naming the problem by SQLSTATE only."""
    code = exc.pgcode or ""
    if isinstance(exc, psycopg2.errors.QueryCanceled):
        return QueryTimeout(f"the query ran longer than the statement timeout of connection "
                            f"{source.name!r} ({source.statement_timeout_s:g} s) and was cancelled", field)
    if not code or code[:2] in ("08", "53", "57", "58", "XX"):
        return SourceUnavailable(f"Postgres connection {source.name!r} failed during the import")
    if isinstance(exc, psycopg2.errors.ReadOnlySqlTransaction):
        what = "the query tried to write; imports are read-only"
    elif isinstance(exc, psycopg2.errors.InsufficientPrivilege):
        what = f"the role of connection {source.name!r} may not do that (permission denied)"
    elif isinstance(exc, psycopg2.errors.UndefinedTable):
        what = "no such table (names are case-sensitive: 'schema.name')"
    elif isinstance(exc, psycopg2.errors.UndefinedColumn):
        what = "the query names a column the table does not have"
    elif code[:2] == "42":
        what = "the query is not valid SQL for this database"
    else:
        what = "the database refused the query"
    return QueryFailed(f"{what} (SQLSTATE {code})", field)


def _schema(description: Any) -> pa.Schema:
    names = [column.name for column in description or ()]
    if not names:
        raise DatasetInvalid("the table or query returned no columns")
    check_names(names)
    return pa.schema([(c.name, _TYPES.get(c.type_code, pa.string())) for c in description])


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _batch(rows: list[tuple], schema: pa.Schema, description: Any, field_name: str) -> pa.RecordBatch:
    arrays = []
    for index, (field, column) in enumerate(zip(schema, description, strict=True)):
        values = [row[index] for row in rows]
        if column.type_code not in _TYPES:
            values = [_text(v) for v in values]
        try:
            arrays.append(pa.array(values, type=field.type))
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            raise QueryFailed(f"column {field.name[:80]!r}: a value could not be stored as "
                              f"{field.type}", field_name) from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
