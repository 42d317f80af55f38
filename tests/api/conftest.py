"""API test fixtures: a real ``dagster dev`` on a temporary SQLite instance and API clients."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from e2i_api.core.config import Settings
from e2i_api.main import create_app
from tests.support.dagster_processes import dagster_dev_port, free_port, write_instance_yaml
from tests.support.markers import needs

# Test-only keys (random, as ``secrets.token_urlsafe(32)`` makes them: weaker keys are refused).
WRITE_KEY = "n5KU_RYQniRb2DCuf95H3piVrRhsyv6ovwLxo1qDL8o"
READ_KEY = "z4NOd7nPpCrucUO3uay_FNFEYUbNlUHd9NSh1Iarogk"
ADMIN_KEY = "exdXcYidDh3u2F5VXsQsTjFMSXV0qNLbpGxoKl54ek8"
WRITE = {"X-API-Key": WRITE_KEY}
READ = {"X-API-Key": READ_KEY}
ADMIN = {"X-API-Key": ADMIN_KEY}
UNLIMITED = {"rate_limit_read": "1000000/minute", "rate_limit_write": "1000000/minute",
             "max_queued_runs_per_client": 100_000}
"""Quotas out of the way of tests about something else (tests/security/test_api_abuse.py tests them)."""


def api_keys() -> list[dict]:
    """Client "frontend": a read+write key and a read-only key (stored hashed); "ops": an admin key."""
    return [
        {"name": "frontend", "key": WRITE_KEY, "scopes": ["runs:read", "runs:write"]},
        {"name": "frontend", "sha256": hashlib.sha256(READ_KEY.encode()).hexdigest(), "scopes": ["runs:read"]},
        {"name": "ops", "key": ADMIN_KEY, "scopes": ["runs:read", "admin"]},
    ]


def api_settings(dagster_port: int, **overrides) -> Settings:
    """Settings with the keys of ``api_keys`` and no effective quotas (unless overridden)."""
    values = {"dagster_port": dagster_port, "api_keys": api_keys(), "cors_origins": ["http://frontend.test"],
              "dagster_timeout_seconds": 15, "mlflow_tracking_uri": "", **UNLIMITED, **overrides}
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="module")
def dagster_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("dagster_home")
    write_instance_yaml(home, {})
    return home


@pytest.fixture(scope="module")
@needs("webserver")
def dagster_port(dagster_home: Path) -> Iterator[int]:
    """Port of a real ``dagster dev`` (webserver + daemon) on ``dagster_home``."""
    with dagster_dev_port(dagster_home) as port:
        yield port


@pytest.fixture(scope="module")
def client(dagster_port: int) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings(dagster_port))) as test_client:
        yield test_client


@pytest.fixture()
def down_client() -> Iterator[TestClient]:
    """An API whose Dagster webserver port has nothing listening."""
    with TestClient(create_app(api_settings(free_port(), dagster_timeout_seconds=2))) as test_client:
        yield test_client


def wait_for_status(client: TestClient, run_id: str, wanted: set[str], timeout: float = 180) -> dict:
    """Poll GET /v1/runs/{id} until its status is in ``wanted``; fail on another final status."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        response = client.get(f"/v1/runs/{run_id}", headers=READ)
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in wanted:
            return body
        if body["status"] in {"SUCCESS", "FAILURE", "CANCELED"}:
            pytest.fail(f"run {run_id} ended {body['status']}, wanted {wanted}: {body}")
        time.sleep(0.5)
    pytest.fail(f"run {run_id} not in {wanted} after {timeout}s: {body}")

