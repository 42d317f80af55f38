"""Attacks on the Postgres dataset import (``POST /v1/datasets``, ``source: postgres``) on the CI
Postgres: statements that write, read server files or escape the timeout; a timeout; an unknown
connection; a URL or host in the body. Each is refused with a 4xx naming the problem, and nothing
happened: no row deleted, the table still there, no canary file, no dataset stored.

The layers under the query check are attacked too, by calling the streaming function with the
raw statement (the check bypassed): the READ ONLY session, the read-only role and the
client-side cancel each stop what they are there to stop on their own.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from psycopg2 import sql

from e2i_pipelines.core.dataset_ingest import DatasetInvalid
from e2i_pipelines.core.dataset_pg_sources import SourceConfigError, get_source
from e2i_pipelines.core.dataset_postgres import CANCEL_GRACE_S, QueryTimeout, stream_to_parquet
from tests.api.test_dataset_postgres import ACME, ROWS, pg_api, post
from tests.support.markers import needs

pytestmark = pytest.mark.postgres
TIMEOUT_S = 1.0
CANARY_SECRET = "canary_0f1e_secret"


@pytest.fixture(scope="module")
@needs("postgres")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, Any], Path]]:
    base = tmp_path_factory.mktemp("pg_attacks")
    with pg_api(base, timeout_s=TIMEOUT_S) as (client, pg):
        yield client, pg, base


def _stored(base: Path) -> list[str]:
    """Every file under the storage root and the staging folder (manifests, Parquet, staged rows)."""
    return sorted(str(p.relative_to(base)) for p in (base / "store", base / "scratch")
                  for p in p.rglob("*") if p.is_file())


def _untouched(client: TestClient, pg: dict[str, Any], base: Path, canary: Path | None = None) -> None:
    with pg["admin"].cursor() as cur:
        cur.execute("SELECT count(*) FROM accounts")
        assert cur.fetchone()[0] == ROWS
        cur.execute("SELECT to_regclass('public.stolen') IS NULL")
        assert cur.fetchone()[0]
    assert client.get("/v1/datasets", headers=ACME).json()["datasets"] == []
    assert _stored(base) == []
    if canary is not None:
        assert not canary.exists()


def _refused(response: Any, where: str, *words: str) -> None:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert where in detail[0]["loc"], detail
    for word in words:
        assert word in detail[0]["msg"], detail
    assert CANARY_SECRET not in response.text and "Traceback" not in response.text


NOT_A_SELECT = {
    "delete": ("DELETE FROM accounts", "SELECT or WITH"),
    "two statements": ("SELECT 1; DROP TABLE accounts", "one statement"),
    "copy to program": ("COPY accounts TO PROGRAM 'touch {canary}'", "SELECT or WITH"),
    "select then copy": ("SELECT 1; COPY (SELECT 1) TO PROGRAM 'touch {canary}'", "one statement"),
    "pg_read_file": ("SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
    "quoted pg_read_file": ('SELECT "pg_read_file"(\'/etc/passwd\')', "pg_read_file"),
    "catalog-qualified": ("SELECT pg_catalog.pg_read_binary_file('/etc/hostname')", "pg_catalog"),
    "writable cte": ("WITH x AS (DELETE FROM accounts RETURNING *) SELECT * FROM x", "DELETE"),
    "select into": ("SELECT * INTO stolen FROM accounts", "INTO"),
    "for update": ("SELECT * FROM accounts FOR UPDATE", "UPDATE"),
    "set_config": ("SELECT set_config('statement_timeout', '0', false), pg_sleep(3)", "set_config"),
    "sql in a string": ("SELECT query_to_xml('DELETE FROM accounts', true, true, '')", "query_to_xml"),
    "comment hides a statement": ("SELECT 1 /* ; */ ; DROP TABLE accounts", "comments"),
    "dollar quote": ("SELECT $$x$$; DROP TABLE accounts", "'$'"),
    "backslash in a plain string": ("SELECT 'a\\'; DROP TABLE accounts; SELECT ", "one statement"),
    "quote-doubling": ("SELECT 'a'';' ; DROP TABLE accounts", "one statement"),
    "unicode escape": ('SELECT U&"\\0070g_read_file"(\'/etc/passwd\')', "U&"),
    "lowercase delete in cte": ("with x as (delete from accounts returning id) select 1", "DELETE"),
    "parenthesised": ("(DELETE FROM accounts)", "SELECT or WITH"),
}


@pytest.mark.parametrize("query,word", NOT_A_SELECT.values(), ids=NOT_A_SELECT.keys())
def test_a_query_that_is_not_one_select_is_refused_and_nothing_happens(env, query: str, word: str) -> None:
    client, pg, base = env
    canary = base / "canary_copy_program"
    response = post(client, {"name": "attack", "query": query.format(canary=canary)})
    _refused(response, "query", word)
    _untouched(client, pg, base, canary)


def test_a_query_over_the_statement_timeout_is_a_422_naming_it(env) -> None:
    client, pg, base = env
    for query in ("SELECT pg_sleep(5)",
                  "SELECT count(*) FROM generate_series(1, 100000000) a, generate_series(1, 1000) b"):
        started = time.monotonic()
        response = post(client, {"name": "slow", "query": query})
        assert time.monotonic() - started < TIMEOUT_S + 3, query
        _refused(response, "query", "statement timeout", f"{TIMEOUT_S:g} s")
    _untouched(client, pg, base)


def test_an_unknown_connection_is_refused(env) -> None:
    client, pg, base = env
    response = client.post("/v1/datasets", headers=ACME, json={
        "source": "postgres", "connection": "production", "name": "x", "table": "accounts"})
    _refused(response, "connection", "no Postgres connection named 'production'")
    _untouched(client, pg, base)


def test_a_connection_url_or_host_in_the_body_is_refused_and_never_dialled(env) -> None:
    client, pg, base = env
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        url = f"postgresql://{pg['role']}:{pg['password']}@127.0.0.1:{port}/{pg['db_name']}"
        bodies = [({"connection": url}, "connection"),
                  ({"connection": "warehouse", "url": url}, "url"),
                  ({"connection": "warehouse", "host": "127.0.0.1", "port": port}, "host"),
                  ({"connection": "warehouse", "password": pg["password"]}, "password")]
        for extra, where in bodies:
            response = client.post("/v1/datasets", headers=ACME, json={
                "source": "postgres", "name": "x", "table": "accounts", **extra})
            assert response.status_code == 422, response.text
            assert where in response.json()["detail"][0]["loc"]
            assert pg["password"] not in response.text
        with pytest.raises(BlockingIOError):
            listener.accept()
    _untouched(client, pg, base)


BAD_TABLES = ["accounts; DROP TABLE accounts", '"accounts"', "public.accounts.x", "accounts--", "1accounts"]


@pytest.mark.parametrize("table", BAD_TABLES)
def test_a_table_name_that_is_not_an_identifier_is_refused(env, table: str) -> None:
    client, pg, base = env
    response = post(client, {"name": "t", "table": table})
    assert response.status_code == 422 and "table" in response.json()["detail"][0]["loc"], response.text
    _untouched(client, pg, base)


def test_database_errors_name_the_sqlstate_never_the_data(env) -> None:
    client, pg, base = env
    _refused(post(client, {"name": "t", "query": "SELECT note::integer FROM accounts"}), "query", "SQLSTATE 22P02")
    _refused(post(client, {"name": "t", "table": "Accounts"}), "table", "no such table", "42P01")
    _refused(post(client, {"name": "t", "query": "SELECT id FROM accounts WHERE id < 0"}), "query", "no rows")
    _refused(post(client, {"name": "t", "query": "SELECT id, id FROM accounts"}), "query", "duplicate column")
    _untouched(client, pg, base)


def test_a_result_over_the_size_cap_is_a_413_and_nothing_is_kept(env, monkeypatch) -> None:
    client, pg, base = env
    monkeypatch.setenv("E2I_MAX_UPLOAD_BYTES", "20000")
    response = post(client, {"name": "big", "table": "accounts"})
    assert response.status_code == 413 and "20000" in response.text, response.text
    _untouched(client, pg, base)


def test_a_misconfigured_connections_file_is_a_503_naming_no_secret(env, tmp_path, monkeypatch) -> None:
    client, pg, base = env
    broken = tmp_path / "sources.yaml"
    broken.write_text(f"warehouse:\n  host: 127.0.0.1\n  dbname: x\n  user: y\n  password: {pg['password']}\n")
    monkeypatch.setenv("E2I_PG_SOURCES_FILE", str(broken))
    response = post(client, {"name": "t", "table": "accounts"})
    assert response.status_code == 503 and "misconfigured" in response.text, response.text
    assert pg["password"] not in response.text and "127.0.0.1" not in response.text
    _untouched(client, pg, base)


def test_a_superuser_connection_is_refused_before_the_query_runs(env) -> None:
    client, pg, base = env
    canary = base / "canary_superuser"
    with pytest.raises(SourceConfigError, match="superuser"):
        _stream(pg, "superuser", f"SELECT 1; COMMIT; SET default_transaction_read_only = off; "
                                 f"COMMIT; COPY (SELECT 1) TO PROGRAM 'touch {canary}'")
    response = client.post("/v1/datasets", headers=ACME, json={
        "source": "postgres", "connection": "superuser", "name": "x", "table": "accounts"})
    assert response.status_code == 503 and "misconfigured" in response.text, response.text
    _untouched(client, pg, base, canary)


# --- the layers under the query check, attacked directly ------------------------------------

def _stream(pg: dict[str, Any], connection: str, statement: str) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("E2I_PG_SOURCES_FILE", str(pg["sources"]))
        with Path(os.devnull).open("wb") as out:
            stream_to_parquet(get_source(connection), sql.SQL(statement), out)


@pytest.mark.parametrize("statement", [
    "SELECT 1; DELETE FROM accounts",
    "SELECT 1; COMMIT; DELETE FROM accounts",
    "SELECT 1; COMMIT; CREATE TABLE stolen AS SELECT * FROM accounts",
])
def test_the_read_only_session_refuses_writes_even_for_a_role_that_may_write(env, statement: str) -> None:
    client, pg, base = env
    with pytest.raises(DatasetInvalid, match="read-only .*SQLSTATE 25006"):
        _stream(pg, "writer", statement)
    _untouched(client, pg, base)


def test_the_read_only_role_refuses_writes_once_the_session_is_writable(env) -> None:
    client, pg, base = env
    with pytest.raises(DatasetInvalid, match="permission denied.*SQLSTATE 42501"):
        _stream(pg, "warehouse", "SELECT 1; COMMIT; SET default_transaction_read_only = off; "
                                 "COMMIT; DELETE FROM accounts")
    canary = base / "canary_role"
    with pytest.raises(DatasetInvalid, match="SQLSTATE 42501"):
        _stream(pg, "warehouse", f"SELECT 1; COMMIT; SET default_transaction_read_only = off; "
                                 f"COMMIT; COPY (SELECT 1) TO PROGRAM 'touch {canary}'")
    _untouched(client, pg, base, canary)


def test_the_client_cancels_a_statement_whose_server_timeout_was_switched_off(env) -> None:
    _, pg, _ = env
    started = time.monotonic()
    with pytest.raises(QueryTimeout, match="statement timeout"):
        _stream(pg, "warehouse", "SELECT 1; SET statement_timeout = 0; SELECT pg_sleep(60)")
    elapsed = time.monotonic() - started
    assert TIMEOUT_S + CANCEL_GRACE_S - 0.5 < elapsed < TIMEOUT_S + CANCEL_GRACE_S + 5, elapsed


BROKEN_CONFIGS = {
    "not a mapping": "- warehouse\n",
    "not yaml": "warehouse: [unclosed\n",
    "unknown key": "warehouse: {host: h, dbname: d, user: u, password_file: p, url: 'postgresql://u:p@h/d'}\n",
    "missing user": "warehouse: {host: h, dbname: d, password_file: p}\n",
    "bad port": "warehouse: {host: h, dbname: d, user: u, password_file: p, port: '5432; rm'}\n",
    "bad timeout": "warehouse: {host: h, dbname: d, user: u, password_file: p, statement_timeout_s: 0}\n",
    "bad sslmode": "warehouse: {host: h, dbname: d, user: u, password_file: p, sslmode: off}\n",
    "python tag": "warehouse: !!python/object/apply:os.system ['touch {canary}']\n",
    "missing password file": "warehouse: {host: 127.0.0.1, dbname: d, user: u, password_file: /nonexistent/pw}\n",
}


@pytest.mark.parametrize("text", BROKEN_CONFIGS.values(), ids=BROKEN_CONFIGS.keys())
def test_a_broken_connections_file_is_a_503_and_runs_nothing(env, tmp_path, monkeypatch, text: str) -> None:
    client, pg, base = env
    canary = tmp_path / "canary_yaml"
    broken = tmp_path / "sources.yaml"
    broken.write_text(text.replace("{canary}", str(canary)))
    monkeypatch.setenv("E2I_PG_SOURCES_FILE", str(broken))
    response = post(client, {"name": "t", "table": "accounts"})
    assert response.status_code == 503 and "misconfigured" in response.text, response.text
    assert "postgresql://" not in response.text and "/nonexistent" not in response.text
    _untouched(client, pg, base, canary)
