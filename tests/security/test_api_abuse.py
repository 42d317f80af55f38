"""API abuse through a real ``dagster dev``: launcher-control tags, another client's runs, rate
limits, oversized bodies, tier and job limits of keys, queued-runs cap, weak keys, audit lines,
and error bodies that leak nothing internal.

Clients: ``frontend`` (tests.api.conftest's WRITE/READ keys), ``partner`` (B), ``ops`` (admin),
``medium`` (max_tier medium), ``capped`` (jobs probe_light_job + probe_medium_job) and ``stuck`` (its runs
never leave the queue: the instance's tag concurrency limit on ``e2i/api-client=stuck`` is 0).
Every refusal also checks that nothing happened (no run launched, B's run still running).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from e2i_api.core.config import ApiKeySpec, Settings, get_settings
from e2i_api.idempotency import CLIENT_TAG
from e2i_api.main import create_app
from e2i_api.run_views import failure_of
from tests.api.conftest import (  # noqa: F401
    ADMIN,
    READ,
    WRITE,
    api_keys,
    api_settings,
    dagster_port,
    wait_for_status,
)
from tests.support.dagster_processes import free_port, write_instance_yaml

pytestmark = pytest.mark.webserver

PARTNER = {"X-API-Key": secrets.token_urlsafe(32)}
CAPPED = {"X-API-Key": secrets.token_urlsafe(32)}
MEDIUM = {"X-API-Key": secrets.token_urlsafe(32)}
STUCK = {"X-API-Key": secrets.token_urlsafe(32)}
LAUNCHER_TAGS = ["dagster-k8s/config", "dagster-ray/config", "docker/container_id"]
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>'


def abuse_keys() -> list[dict]:
    return [*api_keys(),
            {"name": "partner", "key": PARTNER["X-API-Key"], "scopes": ["runs:read", "runs:write"]},
            {"name": "capped", "key": CAPPED["X-API-Key"], "scopes": ["runs:read", "runs:write"],
             "jobs": ["probe_light_job", "probe_medium_job"]},
            {"name": "medium", "key": MEDIUM["X-API-Key"], "scopes": ["runs:read", "runs:write"],
             "max_tier": "medium"},
            {"name": "stuck", "key": STUCK["X-API-Key"], "scopes": ["runs:read", "runs:write"]}]


@pytest.fixture(scope="module")
def dagster_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The instance of this module's ``dagster dev``: client ``stuck`` may run nothing."""
    home = tmp_path_factory.mktemp("abuse_home")
    write_instance_yaml(home, {"concurrency": {
        "pools": {"granularity": "run", "default_limit": 1000},
        "runs": {"tag_concurrency_limits": [{"key": CLIENT_TAG, "value": "stuck", "limit": 0}]}}})
    return home


@pytest.fixture(scope="module")
def client(dagster_port: int) -> Iterator[TestClient]:  # noqa: F811
    settings = api_settings(dagster_port, api_keys=abuse_keys(), max_queued_runs_per_client=2)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def all_run_ids(client: TestClient) -> set[str]:
    """Every run id in the instance (admin view)."""
    found, cursor = set(), None
    while True:
        page = client.get("/v1/runs", params={"limit": 100, **({"cursor": cursor} if cursor else {})},
                          headers=ADMIN).json()
        found |= {r["run_id"] for r in page["runs"]}
        cursor = page["next_cursor"]
        if not cursor:
            return found


def launch(client: TestClient, headers: dict, job: str = "probe_light_job", **params) -> str:
    response = client.post("/v1/runs", json={"job": job, "params": {job.removesuffix("_job"): params}},
                           headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


def no_leak(text: str) -> None:
    assert "http://" not in text and "Traceback" not in text and 'File "' not in text, text


@pytest.mark.parametrize("key", [*LAUNCHER_TAGS, "team", "dagster/priority", "e2i/api-client", "client/"])
def test_only_client_tags_are_accepted(client: TestClient, key: str) -> None:
    before = all_run_ids(client)
    response = client.post("/v1/runs", headers=WRITE, json={
        "job": "probe_light_job", "tags": {key: '{"container_config": {"security_context": {"privileged": true}}}'}})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"][:2] == ["body", "tags"] and repr(key) in error["msg"] and "client/..." in error["msg"]
    assert all_run_ids(client) == before


def test_client_tag_is_accepted_and_recorded(client: TestClient) -> None:
    response = client.post("/v1/runs", headers=WRITE, json={"job": "probe_light_job",
                                                              "tags": {"client/team": "analytics"}})
    assert response.status_code == 202, response.text
    run = wait_for_status(client, response.json()["run_id"], {"SUCCESS"})
    assert run["tags"]["client/team"] == "analytics" and run["tags"][CLIENT_TAG] == "frontend"


def test_another_clients_run_is_404(client: TestClient, audit_records: list[logging.LogRecord]) -> None:
    theirs = launch(client, PARTNER, hold_seconds=120)
    wait_for_status_as(client, theirs, PARTNER, {"STARTED"})
    missing = "00000000-0000-4000-8000-000000000000"
    for headers in (READ, WRITE):
        for path in ("/v1/runs/{}", "/v1/runs/{}/results"):
            got = client.get(path.format(theirs), headers=headers)
            absent = client.get(path.format(missing), headers=headers)
            assert got.status_code == absent.status_code == 404, got.text
            assert got.json()["detail"] == f"no run {theirs!r}"  # the same words as a missing run
            assert absent.json()["detail"] == f"no run {missing!r}"
        artifact = client.get(f"/v1/runs/{theirs}/artifacts", params={"asset": "probe_light", "label": "x"},
                              headers=headers)
        assert artifact.status_code == 404 and artifact.json()["detail"] == f"no run {theirs!r}"
    listed = client.get("/v1/runs", params={"limit": 100}, headers=READ).json()["runs"]
    assert theirs not in {r["run_id"] for r in listed} and all(r["tags"][CLIENT_TAG] == "frontend" for r in listed)
    cancel = client.post(f"/v1/runs/{theirs}/cancel", headers=WRITE)
    assert cancel.status_code == 404 and cancel.json()["detail"] == f"no run {theirs!r}"
    time.sleep(2)
    assert client.get(f"/v1/runs/{theirs}", headers=PARTNER).json()["status"] == "STARTED"
    assert client.get(f"/v1/runs/{theirs}", headers=ADMIN).status_code == 200
    assert theirs in {r["run_id"] for r in client.get("/v1/runs", headers=ADMIN).json()["runs"]}
    own = client.post(f"/v1/runs/{theirs}/cancel", headers=PARTNER)
    assert own.status_code == 202, own.text
    wait_for_status_as(client, theirs, PARTNER, {"CANCELED"})
    lines = audit_records
    refused = [r for r in lines if r.action == "cancel_run" and r.principal == "frontend"]
    assert [(r.run_id, r.outcome, r.method) for r in refused] == [(theirs, 404, "POST")]
    done = [r for r in lines if r.action == "cancel_run" and r.principal == "partner"]
    assert [(r.run_id, r.outcome) for r in done] == [(theirs, 202)] and done[0].client_ip
    assert not [r for r in lines if r.method == "GET"]


def wait_for_status_as(client: TestClient, run_id: str, headers: dict, wanted: set[str],
                       timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/runs/{run_id}", headers=headers).json()
        if body["status"] in wanted:
            return body
        time.sleep(0.5)
    pytest.fail(f"run {run_id} not in {wanted} after {timeout}s: {body}")


def test_launch_is_audited(client: TestClient, audit_records: list[logging.LogRecord]) -> None:
    run_id = launch(client, WRITE)
    refused = client.post("/v1/runs", headers=WRITE, json={"job": "probe_light_job", "tags": {"team": "x"}})
    anonymous = client.post("/v1/runs", json={"job": "probe_light_job"})
    assert refused.status_code == 422 and anonymous.status_code == 401
    lines = [(r.principal, r.action, r.run_id, r.outcome) for r in audit_records]
    assert lines == [("frontend", "create_run", run_id, 202), ("frontend", "create_run", None, 422),
                     (None, "create_run", None, 401)]
    wait_for_status(client, run_id, {"SUCCESS"})


def test_key_limited_to_medium_cannot_launch_heavy(client: TestClient) -> None:
    before = all_run_ids(client)
    for job in ("probe_heavy_job", "twins_job"):  # twins_job: the 200M-twins job is heavy
        response = client.post("/v1/runs", headers=MEDIUM, json={"job": job})
        assert response.status_code == 403, response.text
        detail = response.json()["detail"]
        assert f"'{job}'" in detail and "tier heavy" in detail and "tier medium" in detail
    assert all_run_ids(client) == before
    wait_for_status_as(client, launch(client, MEDIUM, "probe_medium_job"), MEDIUM, {"SUCCESS"})


def test_job_outside_the_allowlist_is_403(client: TestClient) -> None:
    before = all_run_ids(client)
    for job in ("feature_refresh_job", "probe_heavy_job"):
        response = client.post("/v1/runs", headers=CAPPED, json={"job": job})
        assert response.status_code == 403 and f"may not launch job '{job}'" in response.json()["detail"], response.text
    assert all_run_ids(client) == before
    wait_for_status_as(client, launch(client, CAPPED, "probe_light_job"), CAPPED, {"SUCCESS"})


def test_queued_runs_are_capped_per_client(client: TestClient) -> None:
    first, second = launch(client, STUCK), launch(client, STUCK)
    before = all_run_ids(client)
    third = client.post("/v1/runs", headers=STUCK, json={"job": "probe_light_job"})
    assert third.status_code == 429 and "max_queued_runs_per_client=2" in third.json()["detail"], third.text
    assert int(third.headers["Retry-After"]) > 0
    assert all_run_ids(client) == before
    for run_id in (first, second):
        assert client.get(f"/v1/runs/{run_id}", headers=STUCK).json()["status"] == "QUEUED"
    assert client.post("/v1/runs", headers=PARTNER, json={"job": "probe_light_job"}).status_code == 202  # others not
    for run_id in (first, second):
        assert client.post(f"/v1/runs/{run_id}/cancel", headers=STUCK).status_code == 202


def test_rate_limit_per_key_is_429_with_retry_after(dagster_port: int) -> None:  # noqa: F811
    settings = api_settings(dagster_port, api_keys=abuse_keys(), rate_limit_read="3/minute",
                            rate_limit_write="2/minute")
    with TestClient(create_app(settings)) as limited:
        assert [limited.get("/v1/jobs", headers=READ).status_code for _ in range(3)] == [200] * 3
        over = limited.get("/v1/jobs", headers=WRITE)  # another key of the same client: same budget
        assert over.status_code == 429 and 0 < int(over.headers["Retry-After"]) <= 60, over.text
        assert "frontend" in over.json()["detail"]
        assert limited.get("/v1/jobs", headers=PARTNER).status_code == 200  # keyed on the client, not the IP
        bad = {"job": "probe_light_job", "tags": {"team": "x"}}  # refused anyway: nothing launches
        writes = [limited.post("/v1/runs", json=bad, headers=PARTNER).status_code for _ in range(3)]
        assert writes == [422, 422, 429]


def test_oversized_body_is_413_and_launches_nothing(client: TestClient) -> None:
    before = all_run_ids(client)
    big = {"job": "probe_light_job", "params": {"probe_light": {"fail_message": "x" * 70_000}}}
    declared = client.post("/v1/runs", json=big, headers=WRITE)
    assert declared.status_code == 413 and "65536" in declared.json()["detail"], declared.text

    def chunks() -> Iterator[bytes]:
        yield b'{"job": "probe_light_job", "params": {"probe_light": {"fail_message": "'
        for _ in range(20):
            yield b"y" * 4096
        yield b'"}}}'

    chunked = client.post("/v1/runs", content=chunks(), headers={**WRITE, "Content-Type": "application/json"})
    assert chunked.status_code == 413, chunked.text
    lying = client.post("/v1/runs", content=chunks(), headers={**WRITE, "Content-Type": "application/json",
                                                                "Content-Length": "10"})
    assert lying.status_code in (400, 413, 422), lying.text
    assert all_run_ids(client) == before


@pytest.mark.parametrize("spec", [
    {"key": "change-me-dashboard-key"},
    {"key": "REPLACE-ME-with-a-generated-key"},
    {"key": "short-key-0123456789"},
    {"key": "abababababababababababababababababababababababababab"},  # long, 2 symbols
    {"key": "0123456789abcdef0123456789abcdef"},  # 32 hex characters: 16 bytes
    {"sha256": hashlib.sha256(b"change-me-frontend-key").hexdigest()},
    {"sha256": "0" * 64},
])
def test_weak_or_placeholder_keys_are_refused_at_start(spec: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, api_keys=[{"name": "dashboard", **spec}])
    message = str(refused.value)
    assert "'dashboard'" in message and "secrets.token_urlsafe(32)" in message
    assert spec.get("key", "\x00") not in message  # the key itself is never echoed
    monkeypatch.setenv("E2I_API_API_KEYS", json.dumps([{"name": "dashboard", **spec}]))
    get_settings.cache_clear()
    try:
        with pytest.raises(ValidationError, match="dashboard"):
            create_app()  # settings from the environment: the API does not start
    finally:
        get_settings.cache_clear()


def test_generated_keys_are_accepted() -> None:
    for _ in range(300):
        ApiKeySpec(name="a", key=secrets.token_urlsafe(32))
        ApiKeySpec(name="b", key=secrets.token_hex(32))
        ApiKeySpec(name="c", sha256=hashlib.sha256(secrets.token_bytes(8)).hexdigest())


def test_errors_leak_no_internal_address_or_traceback() -> None:
    with TestClient(create_app(api_settings(free_port(), dagster_timeout_seconds=2,
                                            E2I_API_MLFLOW_TRACKING_URI="http://127.0.0.1:9/mlflow"))) as down:
        run_id = "00000000-0000-4000-8000-000000000000"
        for method, path in [("POST", "/v1/runs"), ("GET", "/v1/runs"), ("GET", f"/v1/runs/{run_id}"),
                             ("GET", f"/v1/runs/{run_id}/results"), ("POST", f"/v1/runs/{run_id}/cancel"),
                             ("GET", "/v1/costs")]:
            response = down.request(method, path, headers=WRITE,
                                    **({"json": {"job": "probe_light_job"}} if path == "/v1/runs" and method == "POST" else {}))
            assert response.status_code == 503 and response.json()["detail"] == "Dagster is unavailable", response.text
            no_leak(response.text)
        ready = down.get("/ready", headers=READ)
        assert ready.status_code == 503 and {"dagster_webserver", "mlflow"} <= set(ready.json()["failed"])
        assert {c["detail"] for c in ready.json()["checks"].values()} <= {"down", "down: no answer within 3.0s"}
        no_leak(ready.text)


def test_failure_messages_carry_no_stack() -> None:
    stack = ('dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred while executing "probe"\n'
             '\nStack Trace:\n  File "/opt/e2i/e2i_pipelines/defs/diagnostics/assets.py", line 40, in probe\n'
             '    raise RuntimeError(config.fail_message)\nTraceback (most recent call last):\n')
    failure = failure_of({}, [{"__typename": "RunFailureEvent", "message": "Run failed\nlog tail: secret",
                               "error": {"message": stack}},
                              {"__typename": "ExecutionStepFailureEvent", "stepKey": "probe_light",
                               "error": {"message": f"RuntimeError: disk full\n{stack}"}}])
    no_leak(failure.model_dump_json())
    assert "log tail" not in failure.model_dump_json()
    assert failure.step_failures == ["probe_light: RuntimeError: disk full"]


def test_svg_artifact_is_sandboxed(client: TestClient, dagster_home: Path) -> None:
    @dg.asset(name="svg_plot")
    def svg_plot() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"plot": dg.MetadataValue.md(
            f"![plot](data:image/svg+xml;base64,{base64.b64encode(SVG).decode()})")})

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        run_id = dg.materialize([svg_plot], instance=instance, tags={CLIENT_TAG: "frontend"}).run_id
    response = client.get(f"/v1/runs/{run_id}/artifacts", params={"asset": "svg_plot", "label": "plot"},
                          headers=READ)
    assert response.status_code == 200 and response.content == SVG
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert response.headers["content-security-policy"] == "sandbox"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert client.get(f"/v1/runs/{run_id}/artifacts", params={"asset": "svg_plot", "label": "plot"},
                      headers=PARTNER).status_code == 404
    assert client.get("/health").headers["x-content-type-options"] == "nosniff"


def test_streamed_body_cap_on_a_real_uvicorn(tmp_path: Path) -> None:
    """Chunked upload to ``python -m e2i_api``: cut off at the cap (413), not buffered whole."""
    import httpx

    from tests.api.api_processes import ApiProcess, api_env

    def chunks() -> Iterator[bytes]:
        yield b'{"job": "probe_light_job", "params": {"probe_light": {"fail_message": "'
        for _ in range(40):
            yield b"y" * 4096
        yield b'"}}}'

    with ApiProcess(free_port(), api_env(free_port(), api_keys()), tmp_path / "api.log") as api:
        chunked = httpx.post(f"{api.url}/v1/runs", content=chunks(),
                             headers={**WRITE, "Content-Type": "application/json"}, timeout=30)
        assert chunked.status_code == 413 and chunked.headers["x-content-type-options"] == "nosniff", chunked.text
        declared = httpx.post(f"{api.url}/v1/runs", content=b"{" * 70_000,
                              headers={**WRITE, "Content-Type": "application/json"}, timeout=30)
        assert declared.status_code == 413, declared.text
        small = httpx.post(f"{api.url}/v1/runs", json={"job": "probe_light_job"}, headers=WRITE, timeout=30)
        assert small.status_code == 503 and small.json()["detail"] == "Dagster is unavailable"  # parsed, then launched
