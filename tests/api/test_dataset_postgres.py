"""Datasets imported from Postgres through the API, on the CI Postgres: a table, a SELECT, the same
rows giving the same version, and the stored Parquet equal to the rows (generated, known truth).

The test database gets a read-only role (LOGIN, only CONNECT/USAGE/SELECT), made with
``sql.Identifier`` DDL; the connections file (``E2I_PG_SOURCES_FILE``) names it with a
``password_file``. The API runs in-process with nothing on its Dagster port (imports need none).
"""

from __future__ import annotations

import contextlib
import io
import math
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from psycopg2 import sql

from e2i_api.main import create_app
from e2i_pipelines.core import datasets as store
from e2i_pipelines.core.dataset_pg_sources import get_source
from e2i_pipelines.core.dataset_postgres import CHUNK_ROWS, stream_to_parquet
from tests.api.conftest import api_settings
from tests.api.test_datasets import storage_env
from tests.conftest import _pg_connect, fresh_database
from tests.support.dagster_processes import free_port
from tests.support.markers import needs

pytestmark = pytest.mark.postgres

ACME = {"X-API-Key": secrets.token_urlsafe(48)}
ACME_READ = {"X-API-Key": secrets.token_urlsafe(48)}
BETA = {"X-API-Key": secrets.token_urlsafe(48)}
KEYS = [{"name": "acme", "key": ACME["X-API-Key"], "scopes": ["runs:read", "runs:write"]},
        {"name": "acme", "key": ACME_READ["X-API-Key"], "scopes": ["runs:read"]},
        {"name": "beta", "key": BETA["X-API-Key"], "scopes": ["runs:read", "runs:write"]}]
ROWS = 45_000
"""More than two fetch chunks (CHUNK_ROWS), so streaming is exercised."""


def accounts(rows: int = ROWS, seed: int = 7) -> list[tuple]:
    """Generated rows: id, revenue (some NULL), segment, joined (date), active, amount (numeric)."""
    rng = np.random.default_rng(seed)
    revenue = rng.normal(100, 15, rows)
    return [(i, None if i % 97 == 0 else float(revenue[i]), "abc"[i % 3], date(2020, 1, 1) + timedelta(days=i % 900),
             bool(i % 2), round(i / 7, 4)) for i in range(rows)]


def _ddl(cur: Any, rows: list[tuple]) -> None:
    cur.execute("CREATE TABLE accounts (id integer PRIMARY KEY, revenue double precision, segment text, "
                "joined date, active boolean, amount numeric(12, 4), note text DEFAULT 'canary_0f1e_secret', "
                "seen timestamptz DEFAULT '2024-05-01 12:00:00+02')")
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(r"\N" if v is None else str(v) for v in row) + "\n")
    buffer.seek(0)
    cur.copy_from(buffer, "accounts", columns=("id", "revenue", "segment", "joined", "active", "amount"))
    cur.execute("CREATE SCHEMA sales")
    cur.execute("CREATE TABLE sales.orders AS SELECT id, id * 2 AS qty FROM accounts WHERE id < 10")


def _entry(name: str, params: dict[str, Any], user: str, password_file: str, timeout_s: float) -> str:
    return (f"{name}:\n  host: {params['hostname']}\n  port: {params['port']}\n  dbname: {params['db_name']}\n"
            f"  user: {user}\n  password_file: {password_file}\n  statement_timeout_s: {timeout_s}\n")


@contextlib.contextmanager
def pg_source(folder: Path, timeout_s: float = 30) -> Iterator[dict[str, Any]]:
    """A fresh database with ``accounts`` and ``sales.orders``; a connections file naming a
    read-only role (``warehouse``), a role that may also write the tables (``writer``) and the
    test's own superuser (``superuser``); yields names, the file and an admin connection; drops
    the roles afterwards."""
    tag = uuid.uuid4().hex[:8]
    role, writer = f"e2i_reader_{tag}", f"e2i_writer_{tag}"
    password = secrets.token_hex(16)
    with fresh_database() as params:
        admin = _pg_connect(params["db_name"])
        admin.autocommit = True
        try:
            with admin.cursor() as cur:
                _ddl(cur, accounts())
                for name, rights in ((role, "SELECT"), (writer, "SELECT, INSERT, UPDATE, DELETE")):
                    cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s NOSUPERUSER NOCREATEDB NOCREATEROLE")
                                .format(sql.Identifier(name)), (password,))
                    cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                        sql.Identifier(params["db_name"]), sql.Identifier(name)))
                    for schema in ("public", "sales"):
                        cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                            sql.Identifier(schema), sql.Identifier(name)))
                        cur.execute(sql.SQL("GRANT {} ON ALL TABLES IN SCHEMA {} TO {}").format(
                            sql.SQL(rights), sql.Identifier(schema), sql.Identifier(name)))
                cur.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(writer)))
            (folder / "reader.pw").write_text(password + "\n")
            (folder / "owner.pw").write_text(params["password"])
            sources = folder / "pg_sources.yaml"
            sources.write_text(_entry("warehouse", params, role, "reader.pw", timeout_s)
                               + _entry("writer", params, writer, "reader.pw", timeout_s)
                               + _entry("superuser", params, params["username"], "owner.pw", timeout_s))
            yield {"role": role, "password": password, "sources": sources, "admin": admin, **params}
        finally:
            admin.close()
    cleanup = _pg_connect()
    cleanup.autocommit = True
    with cleanup.cursor() as cur:
        for name in (role, writer):
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
    cleanup.close()


@contextlib.contextmanager
def pg_api(folder: Path, timeout_s: float = 30) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    """The API (in-process) on a fresh storage root under ``folder`` and :func:`pg_source`."""
    with pg_source(folder, timeout_s) as pg, pytest.MonkeyPatch.context() as patch:
        for key, value in storage_env(folder, 64 << 20).items():
            patch.setenv(key, value)
        patch.setenv("E2I_PG_SOURCES_FILE", str(pg["sources"]))
        settings = api_settings(free_port(), api_keys=KEYS, dagster_timeout_seconds=2)
        with TestClient(create_app(settings)) as client:
            yield client, pg


@pytest.fixture(scope="module")
@needs("postgres")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    with pg_api(tmp_path_factory.mktemp("pg_import")) as pair:
        yield pair


def post(client: TestClient, body: dict[str, Any], headers: dict = ACME):
    return client.post("/v1/datasets", json={"source": "postgres", "connection": "warehouse", **body},
                       headers=headers)


def stored(detail: dict[str, Any], client_name: str = "acme") -> Any:
    """The stored Parquet of the version in a response, as an Arrow table."""
    _, data = store.resolve(detail["id"], detail["version"], client_name)
    return pq.read_table(data.open("rb"))


def test_table_import_stores_every_row_with_types_and_missing_counts(env) -> None:
    client, _ = env
    response = post(client, {"name": "accounts", "table": "public.accounts"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["owner"] == "acme" and body["rows"] == ROWS and body["format"] == "parquet"
    assert response.headers["location"] == f"/v1/datasets/{body['id']}"
    columns = {c["name"]: (c["type"], c["missing"]) for c in body["columns"]}
    assert columns == {"id": ("int64", 0), "revenue": ("double", math.ceil(ROWS / 97)),
                       "segment": ("string", 0), "joined": ("date32[day]", 0), "active": ("bool", 0),
                       "amount": ("double", 0), "note": ("string", 0), "seen": ("timestamp[us, tz=UTC]", 0)}
    table = stored(body).to_pydict()
    truth = accounts()
    order = np.argsort(table["id"])
    assert [table["id"][i] for i in order] == [row[0] for row in truth]
    for position, name in ((1, "revenue"), (2, "segment"), (3, "joined"), (4, "active"), (5, "amount")):
        assert [table[name][i] for i in order] == [row[position] for row in truth], name
    assert set(table["seen"]) == {datetime(2024, 5, 1, 10, tzinfo=UTC)}
    assert client.get(f"/v1/datasets/{body['id']}", headers=ACME_READ).json()["rows"] == ROWS
    assert client.get(f"/v1/datasets/{body['id']}", headers=BETA).status_code == 404


def test_select_import_runs_the_query(env) -> None:
    client, _ = env
    query = ("WITH b AS (SELECT id, revenue FROM accounts WHERE segment = 'b' AND revenue IS NOT NULL) "
             "SELECT b.id, b.revenue * 2 AS doubled, o.qty FROM b LEFT JOIN sales.orders o USING (id) "
             "ORDER BY b.id;")
    response = post(client, {"name": "segment_b", "query": query})
    assert response.status_code == 201, response.text
    truth = [row for row in accounts() if row[2] == "b" and row[1] is not None]
    table = stored(response.json()).to_pydict()
    assert table["id"] == [row[0] for row in truth]
    assert np.allclose(table["doubled"], [2 * row[1] for row in truth], rtol=0, atol=1e-12)
    assert table["qty"] == [2 * row[0] if row[0] < 10 else None for row in truth]
    assert response.json()["columns"][2] == {"name": "qty", "type": "int64", "missing": len(truth) - 3}


def test_same_rows_give_the_same_version_and_changed_rows_a_new_one(env) -> None:
    client, pg = env
    query = {"query": "SELECT id, revenue, segment FROM accounts ORDER BY id"}
    first = post(client, {"name": "versions", **query})
    again = post(client, {"name": "versions", **query})
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["version"] == first.json()["version"] and len(again.json()["versions"]) == 1
    elsewhere = post(client, {"name": "versions_copy", **query}).json()
    assert elsewhere["version"] == first.json()["version"] and elsewhere["id"] != first.json()["id"]
    with pg["admin"].cursor() as cur:
        cur.execute("UPDATE accounts SET revenue = revenue + 1 WHERE id = 5")
    try:
        changed = post(client, {"name": "versions", **query})
    finally:
        with pg["admin"].cursor() as cur:
            cur.execute("UPDATE accounts SET revenue = revenue - 1 WHERE id = 5")
    assert changed.status_code == 201 and changed.json()["version"] != first.json()["version"]
    assert [v["version"] for v in changed.json()["versions"]] == [changed.json()["version"], first.json()["version"]]


def test_an_import_has_the_manifest_of_an_upload(env) -> None:
    client, _ = env
    imported = post(client, {"name": "small", "table": "sales.orders"})
    uploaded = client.post("/v1/datasets", params={"name": "small_csv"}, content=b"id,qty\n1,2\n",
                           headers={**ACME, "Content-Type": "text/csv"})
    assert imported.status_code == 201 and uploaded.status_code == 201, imported.text
    manifest, _ = store.resolve(imported.json()["id"], None, "acme")
    upload_manifest, _ = store.resolve(uploaded.json()["id"], None, "acme")
    assert set(manifest) == set(upload_manifest)
    assert manifest["rows"] == 10 and manifest["columns"] == [
        {"name": "id", "type": "int64", "missing": 0}, {"name": "qty", "type": "int64", "missing": 0}]


def test_rows_stream_in_fetch_sized_row_groups(env) -> None:
    """The cursor is read CHUNK_ROWS at a time, each chunk one Parquet row group."""
    _, pg = env
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("E2I_PG_SOURCES_FILE", str(pg["sources"]))
        out = io.BytesIO()
        rows = stream_to_parquet(get_source("warehouse"), sql.SQL("SELECT id FROM accounts ORDER BY id"), out)
    parquet = pq.ParquetFile(io.BytesIO(out.getvalue()))
    assert rows == ROWS and parquet.metadata.num_rows == ROWS
    assert [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)] == \
        [CHUNK_ROWS] * (ROWS // CHUNK_ROWS) + [ROWS % CHUNK_ROWS]


def test_only_a_write_key_imports(env) -> None:
    client, _ = env
    assert post(client, {"name": "nope", "table": "accounts"}, headers=ACME_READ).status_code == 403
    assert post(client, {"name": "nope", "table": "accounts"}, headers={}).status_code == 401
    assert "nope" not in {d["name"] for d in client.get("/v1/datasets", headers=ACME).json()["datasets"]}


READING_QUERIES = [
    'SELECT id AS "delete", segment AS "update" FROM accounts ORDER BY id FETCH FIRST 5 ROWS ONLY',
    "SELECT id, 'DELETE FROM accounts; DROP TABLE x' AS text, revenue::numeric(8, 2) FROM accounts LIMIT 5",
    "WITH recent AS (SELECT * FROM accounts WHERE joined > DATE '2021-06-01') SELECT count(*) AS n, "
    "avg(revenue) AS mean FROM recent;",
    "select id, E'it''s \\' -- not a comment' as quoted from accounts where id in (1, 2, 3)",
]


@pytest.mark.parametrize("query", READING_QUERIES)
def test_reading_queries_with_keywords_in_literals_and_quoted_names_pass(env, query: str) -> None:
    """The query check tokenises like Postgres: words in strings and quoted names are data."""
    client, _ = env
    response = post(client, {"name": "reading", "query": query})
    assert response.status_code in (200, 201), response.text
    assert response.json()["rows"] > 0


def test_a_string_that_looks_like_an_injection_is_stored_as_text(env) -> None:
    client, pg = env
    response = post(client, {"name": "escaped", "query": "SELECT E'\\'; DROP TABLE accounts --' AS s, 1 AS n"})
    assert response.status_code == 201, response.text
    assert stored(response.json()).to_pydict() == {"s": ["'; DROP TABLE accounts --"], "n": [1]}
    with pg["admin"].cursor() as cur:
        cur.execute("SELECT count(*) FROM accounts")
        assert cur.fetchone()[0] == ROWS


def test_memory_holds_one_chunk_not_the_result(env) -> None:
    """Python's peak allocation while streaming 8x the rows stays that of streaming ~2 chunks."""
    import tracemalloc

    _, pg = env
    with pg["admin"].cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS long_rows AS SELECT i AS id, random() AS x, 'row ' || i AS label "
                    "FROM generate_series(1, %s) i", (CHUNK_ROWS * 16,))
        cur.execute(sql.SQL("GRANT SELECT ON long_rows TO {}").format(sql.Identifier(pg["role"])))
    peaks = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("E2I_PG_SOURCES_FILE", str(pg["sources"]))
        source = get_source("warehouse")
        for rows in (CHUNK_ROWS * 2, CHUNK_ROWS * 16):
            statement = sql.SQL("SELECT * FROM long_rows WHERE id <= {}").format(sql.Literal(rows))
            tracemalloc.start()
            try:
                assert stream_to_parquet(source, statement, _Discard()) == rows
                peaks[rows] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    small, large = peaks.values()
    assert large < 1.5 * small, peaks


class _Discard(io.RawIOBase):
    """A sink that keeps nothing (the Parquet bytes are not what is measured)."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(data)
