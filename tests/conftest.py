"""Shared fixtures: real services (PostgreSQL, Docker) that fail under CI instead of skipping."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator

import pytest

from tests.support.markers import fixture_markers, needs

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
@needs("postgres")
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
@needs("docker")
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


@pytest.fixture(autouse=True)
def _no_leaked_mlflow_tracking_uri() -> Iterator[None]:
    """``mlflow.set_tracking_uri`` (the MLflow resource) writes ``MLFLOW_TRACKING_URI`` into
    ``os.environ``; left there, a test's temporary store would reach every process a later test
    on the same worker starts (an API's readiness check then reports MLflow down). Restore it."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="session")
@needs("stack", "docker")
def compose_stack(docker_client):
    """The session's one compose stack for the smoke, monitoring and chaos tests
    (tests/support/shared_stack.py); up at first use, down with its volumes at the end."""
    from tests.support.shared_stack import shared_stack  # imports this module: not at its top

    yield from shared_stack(docker_client)


ENGINE_GROUP = ("docker",)
"""Tests using these share one pytest-xdist worker (``--dist loadgroup``): the engine-measuring
tests must not see each other's containers. Every other test is grouped by its file, so a
module's fixtures (webservers, databases) start once, on one worker."""


def _distributing_by_group(config: pytest.Config) -> bool:
    """True under ``--dist loadgroup``, on the controller and on the workers (pytest-xdist sets
    the workers' ``dist`` to ``no`` and tells them by ``option.loadgroup``)."""
    return config.getoption("dist", None) == "loadgroup" or bool(getattr(config.option, "loadgroup", False))


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with the services its fixtures need (tests/support/markers.py), group the
    tests for ``--dist loadgroup``, and run the tests on the shared compose stack last, in their
    order (faults late, backup/restore last)."""
    from tests.support.shared_stack import stack_rank

    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is not None:
            for name in sorted(fixture_markers(d for defs in info.name2fixturedefs.values() for d in defs)):
                item.add_marker(name)
    if _distributing_by_group(config):
        for item in items:
            engine = any(item.get_closest_marker(name) for name in ENGINE_GROUP)
            item.add_marker(pytest.mark.xdist_group("engine" if engine else item.nodeid.split("::")[0]))
    ranked = {id(item): stack_rank(item.nodeid) for item in items}
    items.sort(key=lambda item: -1 if ranked[id(item)] is None else ranked[id(item)])


class _Records(logging.Handler):
    """Keeps every record it is handed."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture()
def audit_records() -> Iterator[list[logging.LogRecord]]:
    """The ``e2i.audit`` records logged during the test, in order.

    The API's logging setup stops that logger propagating, so pytest's caplog (on the root logger)
    sees nothing once any test in the session has started the API: attach to the logger itself.
    """
    logger, handler = logging.getLogger("e2i.audit"), _Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
