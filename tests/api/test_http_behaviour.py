"""HTTP behaviour without Dagster: CORS, request ids, JSON logs, OpenAPI documentation."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from e2i_api.core.logging import JsonFormatter, request_id_var
from tests.api.conftest import READ


def test_cors_allows_only_configured_origins(down_client: TestClient) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "X-API-Key"}
    ok = down_client.options("/v1/runs", headers={"Origin": "http://frontend.test", **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://frontend.test"
    denied = down_client.options("/v1/runs", headers={"Origin": "http://evil.test", **preflight})
    assert denied.status_code == 400 and "access-control-allow-origin" not in denied.headers
    simple = down_client.get("/health", headers={"Origin": "http://evil.test"})
    assert "access-control-allow-origin" not in simple.headers


def test_request_id_is_echoed_or_generated(down_client: TestClient) -> None:
    given = down_client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = down_client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert len(made.headers["x-request-id"]) == 32
    error = down_client.get("/v1/jobs")
    assert error.json()["request_id"] == error.headers["x-request-id"]


def test_logs_are_json_with_the_request_id() -> None:
    token = request_id_var.set("rid-1")
    try:
        record = logging.LogRecord("e2i_api", logging.INFO, __file__, 1, "request", None, None)
        record.status = 202
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["request_id"] == "rid-1" and line["status"] == 202 and line["msg"] == "request"


def test_openapi_documents_auth_examples_and_job_bodies(down_client: TestClient) -> None:
    doc = down_client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    variants = doc["components"]["schemas"]["RunCreate"]["oneOf"]
    probe = next(v for v in variants if v["properties"]["job"]["const"] == "probe_light_job")
    assert set(probe["properties"]["params"]["properties"]["probe_light"]["properties"]) == {"allocate_mb", "hold_seconds", "fail_message", "write_mb"}
    assert "examples" in doc["components"]["schemas"]["RunAccepted"]
    assert set(doc["paths"]["/v1/runs"]["post"]["responses"]) >= {"202", "401", "403", "404", "422", "503"}


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/jobs/probe_heavy_job"])
def test_jobs_show_tiers_and_schemas(down_client: TestClient, path: str) -> None:
    body = down_client.get(path, headers=READ).json()
    job = body if "name" in body else next(j for j in body["jobs"] if j["name"] == "probe_heavy_job")
    assert job["tier"] == "heavy" and job["assets"] == [{"name": "probe_heavy", "tier": "heavy", "configurable": True}]
    assert job["params_schema"]["properties"]["probe_heavy"]["properties"]["allocate_mb"]["type"] == "integer"
    assert down_client.get("/v1/jobs/nope", headers=READ).status_code == 404
