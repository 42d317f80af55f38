"""Attack: the stack's Postgres roles (docker/postgres/roles.sql) on a real PostgreSQL server.

roles.sql runs as the superuser, as the postgres image's entrypoint runs it at every start, over
a database that an older stack's single superuser created (the upgrade path), then again (idempotent).
The API, MLflow, run (Dagster instance) and exporter roles then try what a code-executing
attacker holding their password would: ``COPY ... TO PROGRAM`` (a canary file must not appear),
DDL, writes, other databases, new roles. Only what each role needs passes.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER, _pg_connect, require

ROLES_SQL = Path(__file__).resolve().parents[2] / "docker" / "postgres" / "roles.sql"
KINDS = ("dagster", "api", "mlflow", "exporter")


def psql_roles(names: dict[str, str], passwords: dict[str, str]) -> subprocess.CompletedProcess:
    variables = [f"dagster_db={names['dagster_db']}", f"mlflow_db={names['mlflow_db']}",
                 *(f"{kind}_role={names[kind]}" for kind in KINDS),
                 *(f"{kind}_password={passwords[kind]}" for kind in KINDS)]
    cmd = ["psql", "-X", "-q", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d", "postgres",
           *(arg for v in variables for arg in ("-v", v)), "-f", str(ROLES_SQL)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PGPASSWORD": PG_PASSWORD})


@pytest.fixture(scope="module")
def roles() -> Iterator[dict[str, Any]]:
    """Fresh role and database names; an "old" dagster database with a superuser-owned table."""
    require(shutil.which("psql") is not None, "psql")
    try:
        admin = _pg_connect()
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no postgres"
        require(False, f"PostgreSQL at {PG_HOST}:{PG_PORT} ({exc})")
    tag = uuid.uuid4().hex[:8]
    names = {"dagster_db": f"sec_dagster_{tag}", "mlflow_db": f"sec_mlflow_{tag}",
             **{kind: f"sec_{kind}_{tag}" for kind in KINDS}}
    passwords = {kind: secrets.token_hex(16) for kind in KINDS}
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{names["dagster_db"]}"')
    old = _pg_connect(names["dagster_db"])
    old.autocommit = True
    with old.cursor() as cur:  # what the single-superuser stack left behind
        cur.execute("CREATE TABLE runs (id serial PRIMARY KEY, run_id text, status text)")
        cur.execute("INSERT INTO runs (run_id, status) VALUES ('r1', 'SUCCESS')")
    old.close()
    try:
        first = psql_roles(names, passwords)
        assert first.returncode == 0, first.stderr
        again = psql_roles(names, passwords)
        assert again.returncode == 0, again.stderr
        yield {"names": names, "passwords": passwords}
    finally:
        with admin.cursor() as cur:
            for db in (names["dagster_db"], names["mlflow_db"]):
                cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            for kind in KINDS:
                cur.execute(f'DROP ROLE IF EXISTS "{names[kind]}"')
        admin.close()


def connect(roles: dict[str, Any], kind: str, db: str) -> Any:
    import psycopg2

    connection = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=roles["names"][kind],
                                  password=roles["passwords"][kind], dbname=roles["names"][db], connect_timeout=10)
    connection.autocommit = True
    return connection


def refused(connection: Any, sql: str) -> str:
    """Run ``sql``; it must fail. Returns the error's SQLSTATE."""
    import psycopg2

    with connection.cursor() as cur, pytest.raises(psycopg2.Error) as error:
        cur.execute(sql)
    return error.value.pgcode


def test_no_role_is_superuser_or_may_create_roles_or_databases(roles: dict[str, Any]) -> None:
    admin = _pg_connect()
    with admin.cursor() as cur:
        cur.execute("SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
                    "FROM pg_roles WHERE rolname = ANY(%s)", ([roles["names"][k] for k in KINDS],))
        rows = cur.fetchall()
        cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                    (roles["names"]["mlflow_db"],))
        mlflow_owner = cur.fetchone()[0]
    admin.close()
    assert len(rows) == 4
    assert all(not any(flags) for _, *flags in rows), rows
    assert mlflow_owner == roles["names"]["mlflow"]


@pytest.mark.parametrize("kind,db", [("api", "dagster_db"), ("mlflow", "mlflow_db"), ("dagster", "dagster_db"),
                                     ("exporter", "dagster_db")])
def test_copy_to_program_is_refused_and_runs_nothing(roles: dict[str, Any], kind: str, db: str,
                                                     tmp_path: Path) -> None:
    canary = Path("/tmp") / f"e2i-canary-{uuid.uuid4().hex}"
    connection = connect(roles, kind, db)
    try:
        assert refused(connection, f"COPY (SELECT 1) TO PROGRAM 'touch {canary}'") == "42501"
        assert refused(connection, f"COPY (SELECT 1) TO '{canary}'") == "42501"
        assert refused(connection, "SELECT pg_read_file('/etc/passwd')") == "42501"
        assert refused(connection, "CREATE ROLE sec_evil SUPERUSER") == "42501"
        assert refused(connection, "CREATE DATABASE sec_evil") == "42501"
    finally:
        connection.close()
    assert not canary.exists()


def test_the_api_role_reads_runs_and_locks_but_cannot_change_anything(roles: dict[str, Any]) -> None:
    connection = connect(roles, "api", "dagster_db")
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT run_id, status FROM runs")
            assert cur.fetchall() == [("r1", "SUCCESS")]
            cur.execute("SELECT pg_try_advisory_lock(42), pg_advisory_unlock(42)")
            assert cur.fetchone() == (True, True)
        assert refused(connection, "CREATE TABLE public.evil (x int)") == "42501"
        assert refused(connection, "DROP TABLE runs") == "42501"
        assert refused(connection, "ALTER TABLE runs ADD COLUMN evil int") == "42501"
        assert refused(connection, "INSERT INTO runs (run_id, status) VALUES ('x', 'x')") == "42501"
        assert refused(connection, "UPDATE runs SET status = 'CANCELED'") == "42501"
        assert refused(connection, "DELETE FROM runs") == "42501"
    finally:
        connection.close()


def test_the_run_role_owns_the_instance_schema_only(roles: dict[str, Any]) -> None:
    """Dagster migrations need DDL in its own database; the upgraded table is now its own."""
    connection = connect(roles, "dagster", "dagster_db")
    try:
        with connection.cursor() as cur:
            cur.execute("CREATE TABLE new_dagster_table (x int)")
            cur.execute("ALTER TABLE runs ADD COLUMN migrated int")
            cur.execute("INSERT INTO runs (run_id, status) VALUES ('r2', 'STARTED')")
            cur.execute("DELETE FROM runs WHERE run_id = 'r2'")
            cur.execute("DROP TABLE new_dagster_table")
    finally:
        connection.close()
    api = connect(roles, "api", "dagster_db")
    try:  # default privileges: the API reads tables the instance role creates later
        with connect(roles, "dagster", "dagster_db") as owner, owner.cursor() as cur:
            cur.execute("CREATE TABLE later_table (x int)")
        with api.cursor() as cur:
            cur.execute("SELECT count(*) FROM later_table")
            assert cur.fetchone() == (0,)
    finally:
        api.close()


@pytest.mark.parametrize("kind,db", [("mlflow", "dagster_db"), ("dagster", "mlflow_db"), ("api", "mlflow_db")])
def test_roles_cannot_open_other_databases(roles: dict[str, Any], kind: str, db: str) -> None:
    import psycopg2

    with pytest.raises(psycopg2.OperationalError) as error:
        connect(roles, kind, db)
    assert "permission denied" in str(error.value)


def test_the_exporter_only_reads(roles: dict[str, Any]) -> None:
    connection = connect(roles, "exporter", "dagster_db")
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs")
            assert cur.fetchone()[0] >= 1
        assert refused(connection, "DELETE FROM runs") == "42501"
        assert refused(connection, "CREATE TABLE evil (x int)") == "42501"
    finally:
        connection.close()


def test_mlflow_owns_its_database(roles: dict[str, Any]) -> None:
    connection = connect(roles, "mlflow", "mlflow_db")
    try:
        with connection.cursor() as cur:
            cur.execute("CREATE TABLE experiments (id int)")
            cur.execute("DROP TABLE experiments")
    finally:
        connection.close()


def test_the_api_role_counts_rate_limits_but_cannot_change_their_table(roles: dict[str, Any]) -> None:
    """The API's shared rate limiter (e2i_api/core/rate_limit.py) works with the API role's rights
    only: rows in e2i_api.rate_limits, no DDL there; the run and exporter roles cannot touch them."""
    import asyncio

    from fastapi import HTTPException

    from e2i_api.core.rate_limit import RateLimits

    names, passwords = roles["names"], roles["passwords"]
    dsn = (f"postgresql://{names['api']}:{passwords['api']}@{PG_HOST}:{PG_PORT}/{names['dagster_db']}")

    async def hits() -> list[int]:
        limits, outcomes = RateLimits("2/hour", "2/hour", dsn), []
        for _ in range(3):
            try:
                await limits.check("sec-client", "GET")
                outcomes.append(200)
            except HTTPException as exc:
                outcomes.append(exc.status_code)
        return outcomes

    assert asyncio.run(hits()) == [200, 200, 429]
    api = connect(roles, "api", "dagster_db")
    try:
        assert refused(api, "DROP TABLE e2i_api.rate_limits") == "42501"
        assert refused(api, "ALTER TABLE e2i_api.rate_limits ADD COLUMN evil int") == "42501"
        assert refused(api, "CREATE TABLE e2i_api.evil (x int)") == "42501"
    finally:
        api.close()
    for kind in ("dagster", "exporter"):
        other = connect(roles, kind, "dagster_db")
        try:
            assert refused(other, "DELETE FROM e2i_api.rate_limits") == "42501"
        finally:
            other.close()
