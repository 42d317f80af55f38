"""Shared fixtures: real services (PostgreSQL, Docker) that fail under CI instead of skipping."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

PG_HOST = os.environ.get("E2I_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("E2I_PG_PORT", "5432"))
PG_USER = os.environ.get("E2I_PG_USER", "e2i")
PG_PASSWORD = os.environ.get("E2I_PG_PASSWORD", "e2i")


def services_required() -> bool:
    """True under CI (or E2I_REQUIRE_SERVICES=1): a missing service is a failure, not a skip."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("E2I_REQUIRE_SERVICES") == "1"


def require(available: bool, what: str) -> None:
    """Skip locally / fail under CI when ``what`` is not available."""
    if available:
        return
    message = f"{what} is not available (run scripts/start_services.sh)"
    if services_required():
        pytest.fail(message)
    pytest.skip(message)  # never under CI or E2I_REQUIRE_SERVICES=1: failed above


def _pg_connect(dbname: str = "postgres"):
    import psycopg2

    return psycopg2.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD, dbname=dbname,
        connect_timeout=3,
    )


@pytest.fixture()
def postgres_db() -> Iterator[dict]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    with fresh_database() as params:
        yield params


@contextlib.contextmanager
def fresh_database() -> Iterator[dict]:
    """Create an empty PostgreSQL database; yield its connection parameters; drop it."""
    try:
        admin = _pg_connect()
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no postgres"
        require(False, f"PostgreSQL at {PG_HOST}:{PG_PORT} ({exc})")
    admin.autocommit = True
    name = f"e2i_test_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    params = {"hostname": PG_HOST, "port": PG_PORT, "username": PG_USER,
              "password": PG_PASSWORD, "db_name": name}
    params["url"] = f"postgresql://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{name}"
    try:
        yield params
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def docker_client():
    """A docker-py client on the local engine (fails under CI when the engine is missing)."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001
        require(False, f"Docker engine ({exc})")
    return client


@pytest.fixture(autouse=True)
def _no_leaked_defs_state_storage():
    """Dagster instances register their defs-state storage in a ContextVar for as long as they
    live; one a test did not dispose of (its temp dir since deleted) would make every later
    in-process ``materialize`` fail with 'unable to open database file'. Clear it per test."""
    from dagster._core.storage.defs_state.base import _current_storage

    _current_storage.set(None)
    yield
    _current_storage.set(None)
