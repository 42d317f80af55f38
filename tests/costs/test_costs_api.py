"""GET /v1/costs and /metrics against a real ``dagster dev``: exact sums of runs of known tier and
wall time, 401 without a key, 422 for a bad window; Dagster availability in /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster._core.instance import DagsterInstance, InstanceRef
from dagster._core.storage.dagster_run import DagsterRunStatus
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from e2i_api.idempotency import CLIENT_TAG
from e2i_api.main import create_app
from e2i_pipelines.defs.monitoring.sensors import cost_finished_runs
from e2i_pipelines.launcher.cgroup_usage import (
    CPU_SECONDS_TAG,
    CPU_UTILISATION_TAG,
    MEMORY_UTILISATION_TAG,
    PEAK_MEMORY_TAG,
)
from e2i_pipelines.launcher.promotion import FAILURE_TAG, PARENT_RUN_TAG
from tests.api.conftest import ADMIN, READ, api_settings
from tests.costs.runs import add_run
from tests.support.dagster_processes import dagster_dev_port, write_instance_yaml
from tests.support.markers import needs

GIB = 1024**3


def usage(memory: str, cpu: str) -> dict[str, str]:
    """Usage tags as the run worker writes them (peak 1 GiB, 12.5 CPU seconds)."""
    return {PEAK_MEMORY_TAG: str(GIB), CPU_SECONDS_TAG: "12.500",
            MEMORY_UTILISATION_TAG: memory, CPU_UTILISATION_TAG: cpu}


DAY = 1_780_012_800.0  # 2026-05-29 00:00 UTC
MINE = {CLIENT_TAG: "frontend"}  # the client of READ's key
OTHERS = {CLIENT_TAG: "partner"}
SEEDED: dict[str, str] = {}  # run ids by name, for the run detail tests


@pytest.fixture(scope="module")
@needs("webserver")
def seeded_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A ``dagster dev`` whose instance holds costed runs of known tier and wall time."""
    home: Path = tmp_path_factory.mktemp("costs_home")
    write_instance_yaml(home, {})
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        SEEDED["measured"] = add_run(instance, "causal_job", "heavy", start=DAY + 60, seconds=900,
                                     tags={**MINE, **usage("0.25", "0.10")})                        # 0.160000
        add_run(instance, "causal_job", "medium", start=DAY + 86_400 + 5, seconds=7, tags=MINE)    # 0.000311
        oom = add_run(instance, "shap_job", "medium", start=DAY + 100, seconds=90,
                      status=DagsterRunStatus.FAILURE,
                      tags={FAILURE_TAG: "oom", **OTHERS, **usage("1.0", "0.5")})                   # 0.004000
        add_run(instance, "shap_job", "heavy", start=DAY + 300, seconds=45,
                tags={PARENT_RUN_TAG: oom, **OTHERS})                                                # 0.008000
        SEEDED["garbage"] = add_run(instance, "causal_job", "heavy", start=DAY - 7200, seconds=60,  # before since
                                    tags={PEAK_MEMORY_TAG: "1e999", CPU_SECONDS_TAG: "nan",
                                          MEMORY_UTILISATION_TAG: "-1", CPU_UTILISATION_TAG: "x"})
        while cost_finished_runs(instance, None)[0]:
            pass
    with dagster_dev_port(home) as port:
        yield port


@pytest.fixture(scope="module")
def client(seeded_port: int) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings(seeded_port))) as test_client:
        yield test_client


WINDOW = {"since": "2026-05-29T00:00:00Z", "until": "2026-05-31T00:00:00Z"}


def test_costs_need_a_key(client: TestClient) -> None:
    response = client.get("/v1/costs", params=WINDOW)
    assert response.status_code == 401 and "missing API key" in response.json()["detail"]
    assert client.get("/v1/costs", headers={"X-API-Key": "wrong-key-0123456789"}).status_code == 401


@pytest.mark.parametrize(("group_by", "expected"), [
    ("job", {"causal_job": ("0.160311", 2, "0.000000"), "shap_job": ("0.012000", 2, "0.004000")}),
    ("tier", {"heavy": ("0.168000", 2, "0.000000"), "medium": ("0.004311", 2, "0.004000")}),
    ("day", {"2026-05-29": ("0.172000", 3, "0.004000"), "2026-05-30": ("0.000311", 1, "0.000000")}),
])
def test_costs_sum_exactly(client: TestClient, group_by: str, expected: dict) -> None:
    response = client.get("/v1/costs", params={**WINDOW, "group_by": group_by}, headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    got = {g["key"]: (g["cost"], g["runs"], g["oom_cost"]) for g in body["groups"]}
    assert got == expected
    assert body["total"]["cost"] == "0.172311" and body["total"]["runs"] == 4
    assert body["currency"] == "USD" and body["group_by"] == group_by


def test_a_client_sees_only_its_own_runs_costs(client: TestClient) -> None:
    body = client.get("/v1/costs", params={**WINDOW, "group_by": "job"}, headers=READ).json()
    assert [(g["key"], g["cost"], g["runs"]) for g in body["groups"]] == [("causal_job", "0.160311", 2)]
    assert body["total"]["cost"] == "0.160311"


def test_window_excludes_and_validates(client: TestClient) -> None:
    body = client.get("/v1/costs", params={"since": "2026-05-30T00:00:00Z", "until": "2026-05-31",
                                           "group_by": "tier"}, headers=ADMIN).json()
    assert body["total"] == {"key": "total", "runs": 1, "cost": "0.000311", "oom_runs": 0, "oom_cost": "0.000000",
                             "measured_runs": 0, "memory_waste": "0.000000", "cpu_waste": "0.000000",
                             "cpu_utilisation": None, "low_cpu": False}
    bad = client.get("/v1/costs", params={"since": "2026-05-31", "until": "2026-05-30"}, headers=READ)
    assert bad.status_code == 422 and "since must be before until" in bad.text
    assert client.get("/v1/costs", params={"group_by": "week"}, headers=READ).status_code == 422


def test_costs_show_waste_of_measured_runs(client: TestClient) -> None:
    """cost x (1 - utilisation): causal 0.16 x 0.75 memory, 0.16 x 0.9 CPU; shap 0.004 x 0.5 CPU."""
    body = client.get("/v1/costs", params={**WINDOW, "group_by": "job"}, headers=ADMIN).json()
    got = {g["key"]: (g["measured_runs"], g["memory_waste"], g["cpu_waste"], g["cpu_utilisation"], g["low_cpu"])
           for g in body["groups"]}
    assert got == {"causal_job": (1, "0.120000", "0.144000", "0.100", True),
                   "shap_job": (1, "0.000000", "0.002000", "0.500", False)}
    assert (body["total"]["memory_waste"], body["total"]["cpu_waste"]) == ("0.120000", "0.146000")


def test_run_detail_shows_measured_usage(client: TestClient) -> None:
    body = client.get(f"/v1/runs/{SEEDED['measured']}", headers=READ).json()
    assert (body["peak_memory"], body["cpu_seconds"]) == (GIB, 12.5)
    assert (body["memory_utilisation"], body["cpu_utilisation"]) == (0.25, 0.1)


def test_run_detail_ignores_unreadable_usage_tags(client: TestClient) -> None:
    """Hostile or broken usage tags are left out, never echoed as numbers or errors."""
    response = client.get(f"/v1/runs/{SEEDED['garbage']}", headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [body[k] for k in ("peak_memory", "cpu_seconds", "memory_utilisation", "cpu_utilisation")] == [None] * 4


def test_metrics_count_routes_and_see_dagster(client: TestClient) -> None:
    client.get("/v1/costs", params=WINDOW, headers=READ)
    client.get("/v1/runs/00000000-0000-0000-0000-000000000000", headers=READ)
    text = client.get("/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("e2i_api_dagster_up", ())] == 1.0
    ok = (("method", "GET"), ("route", "/v1/costs"), ("status", "200"))
    assert samples[("e2i_api_requests_total", ok)] >= 1
    missing = (("method", "GET"), ("route", "/v1/runs/{run_id}"), ("status", "404"))
    assert samples[("e2i_api_requests_total", missing)] == 1
    assert samples[("e2i_api_request_duration_seconds_count", ok)] >= 1
