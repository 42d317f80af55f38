"""The API's /metrics: counts by route template (bounded labels), status, latency; Dagster down."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import READ


def _samples(client: TestClient) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def test_routes_statuses_and_dagster_down(down_client: TestClient) -> None:
    for _ in range(3):
        down_client.get("/health")
    down_client.get("/v1/jobs")                                   # 401: no key
    down_client.get("/v1/jobs/probe_heavy_job", headers=READ)     # 200
    down_client.get("/v1/jobs/nope", headers=READ)                # 404
    for n in range(5):
        down_client.get(f"/no/such/path/{n}")                     # 404, one label set
    m = _samples(down_client)
    assert m[("e2i_api_requests_total", (("method", "GET"), ("route", "/health"), ("status", "200")))] == 3
    assert m[("e2i_api_requests_total", (("method", "GET"), ("route", "/v1/jobs"), ("status", "401")))] == 1
    by_name = (("method", "GET"), ("route", "/v1/jobs/{name}"))
    assert m[("e2i_api_requests_total", (*by_name, ("status", "200")))] == 1
    assert m[("e2i_api_requests_total", (*by_name, ("status", "404")))] == 1
    assert m[("e2i_api_requests_total", (("method", "GET"), ("route", "<unmatched>"), ("status", "404")))] == 5
    assert m[("e2i_api_request_duration_seconds_count", (("method", "GET"), ("route", "/health"), ("status", "200")))] == 3
    assert m[("e2i_api_dagster_up", ())] == 0
    assert m[("e2i_api_requests_in_progress", ())] == 1  # the /metrics request itself
    assert not [key for key in m if "/no/such" in str(key)]


def test_metrics_need_no_key_and_other_routes_do(down_client: TestClient) -> None:
    assert down_client.get("/metrics").status_code == 200
    assert down_client.get("/v1/costs").status_code == 401
