"""The API against a real ``dagster dev`` (webserver + daemon): launch, follow, results, cancel."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from e2i_pipelines.launcher.promotion import FAILURE_REASON_TAG, FAILURE_TAG, PARENT_RUN_TAG
from tests.api.conftest import ADMIN, READ, WRITE, wait_for_status

pytestmark = pytest.mark.webserver


def launch(client: TestClient, params: dict | None = None, job: str = "probe_light_job", **kwargs) -> dict:
    response = client.post("/v1/runs", json={"job": job, "params": params or {}}, headers=WRITE, **kwargs)
    assert response.status_code == 202, response.text
    return response.json()


def run_ids(client: TestClient, job: str = "probe_light_job") -> set[str]:
    """Ids of all runs of ``job``, walking every page."""
    found, cursor = set(), None
    while True:
        params = {"job": job, "limit": 50, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/runs", params=params, headers=READ).json()
        found |= {r["run_id"] for r in page["runs"]}
        cursor = page["next_cursor"]
        if not cursor:
            return found


def test_ready_checks_every_dependency(client: TestClient) -> None:
    response = client.get("/ready", headers=READ)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready" and body["failed"] == []
    assert set(body["checks"]) == {"dagster_webserver", "dagster_code_location", "dagster_storage", "mlflow"}


def test_submit_follow_to_success_and_read_results(client: TestClient) -> None:
    response = client.post("/v1/runs", headers=WRITE, json={
        "job": "probe_light_job", "params": {"probe_light": {"allocate_mb": 3}}, "tags": {"client/team": "api-test"}})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert response.headers["Location"] == f"/v1/runs/{accepted['run_id']}" == accepted["location"]
    assert accepted["tier"] == "light" and accepted["replayed"] is False
    assert accepted["status"] in {"QUEUED", "NOT_STARTED", "STARTING", "STARTED"}

    run = wait_for_status(client, accepted["run_id"], {"SUCCESS"})
    assert run["job"] == "probe_light_job" and run["tier"] == "light"
    assert run["started_at"] and run["ended_at"] and run["failure"] is None
    assert run["tags"]["client/team"] == "api-test" and run["tags"]["e2i/api-client"] == "frontend"

    results = client.get(f"/v1/runs/{accepted['run_id']}/results", headers=READ).json()
    assert results["status"] == "SUCCESS"
    [asset] = results["assets"]
    assert asset["asset"] == "probe_light"
    assert asset["metadata"]["allocated_mb"] == {"type": "int", "value": 3, "url": None, "description": None}
    assert asset["metadata"]["checksum"]["value"] == 10.0


def test_medium_job_reports_medium_tier(client: TestClient) -> None:
    accepted = launch(client, job="probe_medium_job")
    assert accepted["tier"] == "medium"
    assert wait_for_status(client, accepted["run_id"], {"SUCCESS"})["tier"] == "medium"


def test_failed_run_reports_its_failure_reason(client: TestClient, dagster_home: Path) -> None:
    accepted = launch(client, {"probe_light": {"fail_message": "disk quota exceeded"}})
    run_id = accepted["run_id"]
    run = wait_for_status(client, run_id, {"FAILURE"})
    assert run["failure"]["kind"] == "error" and run["promoted_to"] is None
    assert "disk quota exceeded" in " ".join(run["failure"]["step_failures"])

    # What the tiered launcher records on an OOM-killed run, and the promotion sensor's re-launch.
    @dg.asset(name="promoted_probe")
    def promoted_probe() -> None:
        return None

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_run_tags(run_id, {FAILURE_TAG: "oom", FAILURE_REASON_TAG: "OOM-killed at light (limit 2g)"})
        child = dg.materialize([promoted_probe], instance=instance, tags={PARENT_RUN_TAG: run_id})
    oom = client.get(f"/v1/runs/{run_id}", headers=READ).json()
    assert oom["failure"]["kind"] == "oom" and oom["failure"]["failure_tag"] == "oom"
    assert oom["failure"]["message"] == "OOM-killed at light (limit 2g)"
    assert oom["promoted_to"] == child.run_id
    # launched outside the API (no e2i/api-client tag): only an admin key sees it
    assert client.get(f"/v1/runs/{child.run_id}", headers=READ).status_code == 404
    assert client.get(f"/v1/runs/{child.run_id}", headers=ADMIN).json()["promoted_from"] == run_id


def test_cancel_a_running_run(client: TestClient) -> None:
    accepted = launch(client, {"probe_light": {"hold_seconds": 120}})
    wait_for_status(client, accepted["run_id"], {"STARTED"})
    response = client.post(f"/v1/runs/{accepted['run_id']}/cancel", headers=WRITE)
    assert response.status_code == 202, response.text
    assert response.json()["status"] in {"CANCELING", "CANCELED"}
    run = wait_for_status(client, accepted["run_id"], {"CANCELED"}, timeout=60)
    assert run["ended_at"]
    again = client.post(f"/v1/runs/{accepted['run_id']}/cancel", headers=WRITE)
    assert again.status_code == 409 and "already finished" in again.json()["detail"]


def test_cancel_needs_write_scope_and_an_existing_run(client: TestClient) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    assert client.post(f"/v1/runs/{missing}/cancel", headers=READ).status_code == 403
    assert client.post(f"/v1/runs/{missing}/cancel", headers=WRITE).status_code == 404
    assert client.get(f"/v1/runs/{missing}", headers=READ).status_code == 404
    assert client.get(f"/v1/runs/{missing}/results", headers=READ).status_code == 404


def test_idempotent_resubmission_returns_the_same_run(client: TestClient) -> None:
    body = {"job": "probe_light_job", "params": {"probe_light": {"allocate_mb": 1}}}
    headers = {**WRITE, "Idempotency-Key": "retry-test-1"}
    before = run_ids(client)
    with ThreadPoolExecutor(6) as pool:  # concurrent retries race for the same key
        responses = list(pool.map(lambda _: client.post("/v1/runs", json=body, headers=headers), range(6)))
    assert [r.status_code for r in responses] == [202] * 6, [r.text for r in responses]
    ids = {r.json()["run_id"] for r in responses}
    assert len(ids) == 1
    assert sorted(r.json()["replayed"] for r in responses) == [False] + [True] * 5
    assert run_ids(client) - before == ids

    later = client.post("/v1/runs", json=body, headers=headers)  # after the fact: same run
    assert later.status_code == 202 and later.json()["run_id"] in ids and later.json()["replayed"]
    other = client.post("/v1/runs", json={**body, "params": {"probe_light": {"allocate_mb": 2}}}, headers=headers)
    assert other.status_code == 422
    assert other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert run_ids(client) - before == ids
    wait_for_status(client, ids.pop(), {"SUCCESS"})


def test_invalid_requests_launch_nothing(client: TestClient) -> None:
    before = run_ids(client)
    bad = [
        ({"job": "probe_light_job", "params": {"probe_light": {"allocate_mb": "lots"}}},
         ["body", "params", "probe_light", "allocate_mb"]),
        ({"job": "probe_light_job", "params": {"probe_light": {"allocate_gb": 1}}},
         ["body", "params", "probe_light", "allocate_gb"]),
        ({"job": "probe_light_job", "params": {"probe_heavy": {}}}, ["body", "params", "probe_heavy"]),
        ({"job": "probe_light_job", "tags": {"dagster/priority": "9"}}, ["body", "tags"]),
        ({"job": "probe_light_job", "extra": 1}, ["body", "extra"]),
        ({"params": {}}, ["body", "job"]),
    ]
    for body, loc in bad:
        response = client.post("/v1/runs", json=body, headers=WRITE)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["detail"][0]["loc"] == loc, response.json()
    bad_key = client.post("/v1/runs", json={"job": "probe_light_job"}, headers={**WRITE, "Idempotency-Key": "a b"})
    assert bad_key.status_code == 422 and bad_key.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    unknown = client.post("/v1/runs", json={"job": "no_such_job"}, headers=WRITE)
    assert unknown.status_code == 404 and "no_such_job" in unknown.json()["detail"]
    assert client.get("/v1/runs/not-a-run-id", headers=READ).status_code == 422
    assert run_ids(client) == before


def test_auth_failures(client: TestClient) -> None:
    body = {"job": "probe_light_job"}
    assert client.get("/health").status_code == 200
    for path in ("/v1/jobs", "/v1/runs", "/ready"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"X-API-Key": "wrong-key-0123456789"}).status_code == 401
    assert client.post("/v1/runs", json=body).status_code == 401
    forbidden = client.post("/v1/runs", json=body, headers=READ)
    assert forbidden.status_code == 403 and "runs:write" in forbidden.json()["detail"]
    assert client.get("/v1/jobs", headers=READ).status_code == 200


def test_list_filters_and_paginates(client: TestClient) -> None:
    first = launch(client)
    second = launch(client)
    for run in (first, second):
        wait_for_status(client, run["run_id"], {"SUCCESS"})
    page = client.get("/v1/runs", params={"status": "SUCCESS", "job": "probe_light_job", "limit": 1},
                      headers=READ).json()
    assert [r["run_id"] for r in page["runs"]] == [second["run_id"]] and page["next_cursor"]
    page2 = client.get("/v1/runs", params={"status": "SUCCESS", "job": "probe_light_job", "limit": 1,
                                           "cursor": page["next_cursor"]}, headers=READ).json()
    assert [r["run_id"] for r in page2["runs"]] == [first["run_id"]]
    failed = client.get("/v1/runs", params={"status": "FAILURE", "job": "probe_light_job"}, headers=READ).json()
    assert all(r["status"] == "FAILURE" for r in failed["runs"])
    assert client.get("/v1/runs", params={"status": "DONE"}, headers=READ).status_code == 422


PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def test_results_of_a_real_causal_run(client: TestClient, dagster_home: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The real causal assets: estimate, CI, method, target, adjustment set, CATE, diagnostics."""
    monkeypatch.setenv("E2I_DATA_ROOT", str(tmp_path))  # the data file lies under the data root
    from e2i_pipelines.core.storage import E2IStorage
    from e2i_pipelines.core.tracking import MlflowTracker
    from e2i_pipelines.defs.causal.assets import causal_estimate
    from e2i_pipelines.defs.causal.checks import causal_refutations
    from e2i_pipelines.defs.causal.diagnostics import causal_diagnostics
    from e2i_pipelines.defs.data.assets import dataset
    from tests.causal.generated import heterogeneous

    frame, _, _ = heterogeneous(4000, seed=3)
    frame.to_parquet(tmp_path / "h.parquet")
    resources = {"storage": E2IStorage(root=str(tmp_path / "data")),
                 "mlflow": MlflowTracker(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
                 "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "io"))}
    config = {"ops": {
        "dataset": {"config": {"source": "file", "path": str(tmp_path / "h.parquet"), "treatment": "t",
                               "outcome": "y", "common_causes": ["x0", "x1"], "effect_modifiers": ["x0"]}},
        "causal_estimate": {"config": {"method": "propensity_score_weighting", "num_simulations": 20,
                                       "refit_simulations": 2}}}}
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        result = dg.materialize([dataset, causal_estimate, causal_refutations, causal_diagnostics],
                                resources=resources, run_config=config, instance=instance)
    body = client.get(f"/v1/runs/{result.run_id}/results", headers=ADMIN).json()
    [summary] = body["highlights"]["causal"]
    assert summary["method"] == "propensity_score_weighting" and summary["target"] == "ate"
    assert summary["design"] == "observational" and summary["adjustment_set"] == ["x0", "x1"]
    assert summary["ci_low"] < summary["estimate"] < summary["ci_high"]
    assert {d["name"] for d in summary["diagnostics"]} == {"covariate_balance", "overlap", "sensitivity"}
    assert all(isinstance(d["passed"], bool) for d in summary["diagnostics"])
    assert len(summary["refutations"]) == 5 and summary["skipped_checks"] == {}
    assert len(summary["cate"]) == 4 and {"segment", "estimate", "ci_low", "ci_high"} <= set(summary["cate"][0])


def test_results_recognise_analytics_outputs(client: TestClient, dagster_home: Path) -> None:
    """A run with SHAP/causal/twin/MLflow metadata (materialized into the same instance) reads back."""

    @dg.asset(name="causal_estimate_demo")
    def causal() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={
            "estimate": 0.12, "ci_low": 0.1, "ci_high": 0.14, "method": "linear_regression",
            "top_features": dg.MetadataValue.json([{"feature": "age", "mean_abs_shap": 0.3}]),
            "uplift": 0.05, "ate": 0.04, "mlflow_run_id": "abc123", "mlflow_artifact_uri": "file:///tmp/mlruns/1/abc123/artifacts",
            "forest_plot": dg.MetadataValue.md(f"![plot](data:image/png;base64,{base64.b64encode(PNG).decode()})"),
            "notes": dg.MetadataValue.md("# Notes\nall good"),
            "docs": dg.MetadataValue.url("https://example.org/docs"),
        })

    @dg.asset_check(asset=causal, name="placebo_refuter")
    def placebo() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True, metadata={"p_value": 0.71})

    @dg.asset_check(asset=causal, name="subset_refuter")
    def subset() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, metadata={"refuted_effect": 0.3})

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        result = dg.materialize([causal, placebo, subset], instance=instance)
    run_id = result.run_id
    body = client.get(f"/v1/runs/{run_id}/results", headers=ADMIN).json()
    meta = body["assets"][0]["metadata"]
    assert meta["estimate"]["value"] == 0.12 and meta["method"]["value"] == "linear_regression"
    assert meta["top_features"] == {"type": "json", "value": [{"feature": "age", "mean_abs_shap": 0.3}],
                                    "url": None, "description": None}
    assert meta["forest_plot"]["type"] == "plot" and meta["notes"]["type"] == "markdown"
    assert meta["docs"]["url"] == "https://example.org/docs"
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["placebo_refuter"]["passed"] and not checks["subset_refuter"]["passed"]
    assert checks["placebo_refuter"]["metadata"]["p_value"]["value"] == 0.71

    high = body["highlights"]
    [causal_summary] = high["causal"]
    assert (causal_summary["estimate"], causal_summary["ci_low"], causal_summary["ci_high"]) == (0.12, 0.1, 0.14)
    assert causal_summary["refutations_passed"] is False and len(causal_summary["refutations"]) == 2
    assert high["shap"][0]["top_features"][0]["feature"] == "age"
    assert high["twins"][0]["values"] == {"uplift": 0.05, "ate": 0.04}
    assert high["mlflow"][0]["run_id"] == "abc123"

    plot = client.get(meta["forest_plot"]["url"], headers=ADMIN)
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png" and plot.content == PNG
    notes = client.get(meta["notes"]["url"], headers=ADMIN)
    assert notes.headers["content-type"].startswith("text/markdown") and notes.text == "# Notes\nall good"
    assert client.get(f"/v1/runs/{run_id}/artifacts", params={"asset": "causal_estimate_demo", "label": "nope"},
                      headers=ADMIN).status_code == 404
    detail = client.get(f"/v1/runs/{run_id}", headers=ADMIN).json()
    assert detail["status"] == "SUCCESS" and detail["job"] == result.dagster_run.job_name
    assert detail["tier"] is None  # an ad-hoc asset run: no e2i/tier tag, not a catalog job


def test_webserver_down_is_503(down_client: TestClient) -> None:
    run_id = "00000000-0000-4000-8000-000000000000"
    for method, path, kwargs in [
        ("POST", "/v1/runs", {"json": {"job": "probe_light_job"}}),
        ("GET", "/v1/runs", {}), ("GET", f"/v1/runs/{run_id}", {}),
        ("GET", f"/v1/runs/{run_id}/results", {}), ("POST", f"/v1/runs/{run_id}/cancel", {}),
    ]:
        response = down_client.request(method, path, headers=WRITE, **kwargs)
        assert response.status_code == 503, (path, response.text)
        assert "Dagster is unavailable" in response.json()["detail"] and "Traceback" not in response.text
    ready = down_client.get("/ready", headers=READ)
    assert ready.status_code == 503 and "dagster_webserver" in ready.json()["failed"]
    assert down_client.get("/health").status_code == 200
