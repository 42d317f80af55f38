"""The API's answer while Dagster's storage is down: 503 with Retry-After, not 502/500 (no stack)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from e2i_api.core.errors import install_error_handlers, storage_unavailable
from e2i_api.dagster_client import DagsterClient, DagsterQueryError, DagsterUnavailableError

POSTGRES_DOWN = [
    '(psycopg2.OperationalError) connection to server at "postgres" (172.20.0.2), port 5432 failed:'
    " Connection refused",
    "(psycopg2.OperationalError) server closed the connection unexpectedly",
    "FATAL:  the database system is shutting down",
    "FATAL:  terminating connection due to administrator command",
]


def _app(message: str) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise DagsterQueryError(message)

    return TestClient(app)


@pytest.mark.parametrize("message", POSTGRES_DOWN)
def test_storage_down_is_503(message: str) -> None:
    assert storage_unavailable(message)
    response = _app(message).get("/boom")
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert "storage is unavailable" in response.json()["detail"]


def test_other_graphql_errors_stay_502() -> None:
    message = "Cannot query field 'nope' on type 'Run'"
    assert not storage_unavailable(message)
    assert _app(message).get("/boom").status_code == 502


@pytest.mark.parametrize(("status", "body", "error"), [
    (500, "Internal Server Error", DagsterUnavailableError),
    (500, '{"errors": [{"message": "(psycopg2.OperationalError) server closed the connection"}]}',
     DagsterQueryError),
    (400, "Bad Request", DagsterQueryError),
])
def test_webserver_failure_without_graphql_body_is_unavailable(status: int, body: str, error: type) -> None:
    """A webserver 5xx with no GraphQL body means the webserver failed (503); a 4xx stays a bug."""
    transport = httpx.MockTransport(lambda _: httpx.Response(status, text=body))
    client = DagsterClient("http://127.0.0.1:3000", "e2i", "__repository__", 5.0, transport=transport)
    with pytest.raises(error):
        asyncio.run(client.execute("{ version }"))
