"""Datasets through the real API process and a real ``dagster dev``: upload a CSV, read what was
stored, run the causal job on its id, read the results back, delete it (not while it is in use).

Storage is a fresh ``file://`` root shared by the API and the run processes (``E2I_STORAGE_URL``).
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.api.api_processes import ApiProcess, api_env
from tests.api.conftest import ADMIN, ADMIN_KEY, WRITE, WRITE_KEY, dagster_home  # noqa: F401
from tests.causal.generated import heterogeneous
from tests.support.dagster_processes import dagster_dev, free_port

pytestmark = pytest.mark.webserver

KEYS = [{"name": "frontend", "key": WRITE_KEY, "scopes": ["runs:read", "runs:write"]},
        {"name": "ops", "key": ADMIN_KEY, "scopes": ["runs:read", "runs:write", "admin"]}]
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def storage_env(base: Path, cap: int = 64 << 20) -> dict[str, str]:
    """Storage root, scratch folder and upload cap shared by the API and the run processes."""
    return {"E2I_STORAGE_URL": f"file://{base / 'store'}", "E2I_DATA_DIR": str(base / "scratch"),
            "E2I_MAX_UPLOAD_BYTES": str(cap)}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return storage_env(tmp_path_factory.mktemp("datasets"))


@pytest.fixture(scope="module")
def api(dagster_home: Path, env: dict[str, str]) -> Iterator[httpx.Client]:  # noqa: F811
    """The API process on a ``dagster dev`` that sees the same storage."""
    port = free_port()
    dagster = dagster_dev(dagster_home, port, env=env)
    server = None
    try:
        server = ApiProcess(free_port(), {**api_env(port, KEYS), **env},
                            dagster_home / "api.log").start()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            yield client
    finally:
        if server is not None:
            server.stop()
        dagster.stop()


def _csv(frame: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def _upload(api: httpx.Client, body: bytes, name: str, headers: dict = WRITE,
            content_type: str = "text/csv") -> httpx.Response:
    return api.post("/v1/datasets", params={"name": name}, content=body,
                    headers={**headers, "Content-Type": content_type})


def _launch_causal(api: httpx.Client, dataset_id: str, expect: int = 202) -> httpx.Response:
    """``causal_job`` on an uploaded dataset (propensity weighting, few simulations)."""
    params = {"dataset": {"id": dataset_id, "treatment": "t", "outcome": "y",
                          "common_causes": ["x0", "x1"]},
              "causal_estimate": {"method": "propensity_score_weighting", "num_simulations": 20,
                                  "refit_simulations": 2}}
    launched = api.post("/v1/runs", json={"job": "causal_job", "params": params}, headers=WRITE)
    assert launched.status_code == expect, launched.text
    return launched


def _wait(api: httpx.Client, run_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(f"/v1/runs/{run_id}", headers=WRITE).json()
        if body["status"] in FINISHED:
            return body
        time.sleep(1)
    pytest.fail(f"run {run_id} did not finish in {timeout}s")


def test_upload_describes_the_stored_dataset(api: httpx.Client) -> None:
    frame = pd.DataFrame({"t": [1, 0, 1, 0], "y": [2.5, None, 1.0, 3.0],
                          "segment": ["a", "b", None, "a"], "n": [1, 2, 3, 4]})
    body = _csv(frame)
    first = _upload(api, body, "described")
    assert first.status_code == 201, first.text
    detail = first.json()
    assert detail["name"] == "described" and detail["owner"] == "frontend"
    assert detail["rows"] == 4 and detail["size_bytes"] == len(body) and detail["format"] == "csv"
    assert detail["columns"] == [{"name": "t", "type": "int64", "missing": 0},
                                 {"name": "y", "type": "double", "missing": 1},
                                 {"name": "segment", "type": "string", "missing": 1},
                                 {"name": "n", "type": "int64", "missing": 0}]
    assert detail["version"] == hashlib.sha256(body).hexdigest()
    assert first.headers["Location"] == f"/v1/datasets/{detail['id']}"
    again = _upload(api, body, "described")  # the same bytes: the same version, nothing new
    assert again.status_code == 200 and again.json()["version"] == detail["version"]
    assert [v["version"] for v in again.json()["versions"]] == [detail["version"]]
    multipart = api.post("/v1/datasets", files={"file": ("x.csv", body, "text/csv")},
                         data={"name": "described"}, headers=WRITE)
    assert multipart.status_code == 200 and multipart.json()["version"] == detail["version"]
    changed = _upload(api, _csv(frame.iloc[:3]), "described")
    assert changed.status_code == 201 and changed.json()["id"] == detail["id"]
    assert [v["version"] for v in changed.json()["versions"]] == [changed.json()["version"], detail["version"]]
    listed = api.get("/v1/datasets", headers=WRITE).json()["datasets"]
    assert [d["id"] for d in listed].count(detail["id"]) == 1
    got = api.get(f"/v1/datasets/{detail['id']}", headers=WRITE).json()
    assert got["version"] == changed.json()["version"] and got["rows"] == 3
    assert api.get(f"/v1/datasets/{detail['id']}", headers=ADMIN).status_code == 200  # admins see all


def test_a_parquet_upload_keeps_its_types(api: httpx.Client) -> None:
    frame = pd.DataFrame({"t": np.array([1, 0, 1], dtype=np.int32), "y": [0.5, np.nan, 2.0]})
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    response = _upload(api, buffer.getvalue(), "typed", content_type="application/vnd.apache.parquet")
    assert response.status_code == 201, response.text
    assert response.json()["columns"] == [{"name": "t", "type": "int32", "missing": 0},
                                          {"name": "y", "type": "double", "missing": 1}]


def test_upload_run_the_causal_job_on_its_id_and_read_the_results(api: httpx.Client) -> None:
    """The end-to-end path: a CSV in, a causal estimate out (true ATE = 1), the dataset kept
    while the run is active and deletable after."""
    frame, true_ate, _ = heterogeneous(4000, seed=11)
    uploaded = _upload(api, _csv(frame), "trial")
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    run_id = _launch_causal(api, dataset["id"]).json()["run_id"]
    refused = api.delete(f"/v1/datasets/{dataset['id']}", headers=WRITE)
    assert refused.status_code == 409 and run_id in refused.json()["detail"], refused.text
    run = _wait(api, run_id)
    assert run["status"] == "SUCCESS", run
    assert run["tags"]["e2i/dataset"] == dataset["id"]
    results = api.get(f"/v1/runs/{run_id}/results", headers=WRITE).json()
    [summary] = results["highlights"]["causal"]
    assert summary["ci_low"] < summary["estimate"] < summary["ci_high"]
    assert abs(summary["estimate"] - true_ate) < 0.3, summary
    [asset] = [a for a in results["assets"] if a["asset"] == "dataset"]
    assert asset["metadata"]["dataset_id"]["value"] == dataset["id"]
    assert asset["metadata"]["dataset_version"]["value"] == dataset["version"]
    assert asset["metadata"]["rows"]["value"] == 4000
    deleted = api.delete(f"/v1/datasets/{dataset['id']}", headers=WRITE)
    assert deleted.status_code == 204, deleted.text
    assert api.get(f"/v1/datasets/{dataset['id']}", headers=WRITE).status_code == 404
    gone = _launch_causal(api, dataset["id"], expect=422)
    assert "no dataset" in gone.text


@pytest.fixture(scope="module")
def s3_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, object]]:
    """The API and ``dagster dev`` with storage on moto's S3 server (loopback); scratch folders
    on local disk only."""
    from tests.support.dagster_processes import write_instance_yaml
    from tests.support.s3 import CREDENTIALS, moto_server

    base = tmp_path_factory.mktemp("datasets_s3")
    home = base / "home"
    home.mkdir()
    write_instance_yaml(home, {})
    with moto_server() as s3:
        env = {**storage_env(base), **CREDENTIALS, "E2I_STORAGE_URL": s3.url,
               "E2I_S3_ENDPOINT_URL": s3.endpoint}
        port = free_port()
        dagster = dagster_dev(home, port, env=env)
        server = None
        try:
            server = ApiProcess(free_port(), {**api_env(port, KEYS), **env}, base / "api.log").start()
            with httpx.Client(base_url=server.url, timeout=60) as client:
                yield client, s3
        finally:
            if server is not None:
                server.stop()
            dagster.stop()


def test_on_s3_upload_run_the_causal_job_and_read_the_results(s3_api: tuple[httpx.Client, object]) -> None:
    api, s3 = s3_api
    frame, true_ate, _ = heterogeneous(3000, seed=5)
    uploaded = _upload(api, _csv(frame), "trial_s3")
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    keys = s3.keys(f"e2i/datasets/frontend/{dataset['id']}/{dataset['version']}/")
    assert [k.rsplit("/", 1)[1] for k in keys if k.endswith(".json")] == ["manifest.json"]
    assert any(k.endswith(".parquet") for k in keys)
    run = _wait(api, _launch_causal(api, dataset["id"]).json()["run_id"])
    assert run["status"] == "SUCCESS", run
    results = api.get(f"/v1/runs/{run['run_id']}/results", headers=WRITE).json()
    [summary] = results["highlights"]["causal"]
    assert abs(summary["estimate"] - true_ate) < 0.3, summary
    assert any(k.startswith("e2i/dataset/") for k in s3.keys("e2i/")), "the run wrote its dataset asset to S3"
