"""The compose stack with profile ``monitoring``, for real: after a run through the API, Prometheus
(its own HTTP query API) has the run's metrics from the exporter and the API's request counts,
and GET /v1/costs has the run's cost from the daemon's cost sensor. It runs first on the session's
stack (tests/support/shared_stack.py): its run is the stack's first."""

from __future__ import annotations

import httpx
import pytest

from tests.stack.compose_stack import ComposeStack
from tests.stack.test_stack_smoke import FINISHED, api, submit, wait_for
from tests.support.prometheus import query_prometheus

pytestmark = [pytest.mark.stack, pytest.mark.docker, pytest.mark.timeout(1800)]


def query(stack: ComposeStack, expr: str, timeout: float = 180) -> list[dict]:
    """Poll the stack's Prometheus until ``expr`` has a sample."""
    return query_prometheus(stack.prometheus_port, expr, timeout=timeout, interval=3)


def test_prometheus_reads_back_a_runs_metrics_and_its_cost(stack: ComposeStack) -> None:
    run_id = submit(stack, "probe_light_job", "probe_light", allocate_mb=32, hold_seconds=2)
    run = wait_for(stack, run_id, FINISHED)
    assert run["status"] == "SUCCESS", run

    (runs,) = query(stack, 'e2i_runs{job_name="probe_light_job",status="SUCCESS",tier="light"}')
    assert runs["value"][1] == "1" and runs["metric"]["job"] == "e2i-exporter"
    (duration,) = query(stack, 'e2i_run_duration_seconds_count{tier="light"} > 0')
    assert duration["value"][1] == "1"
    (latency,) = query(stack, 'e2i_run_launch_to_first_step_seconds_count{tier="light"} > 0')
    assert latency["value"][1] == "1"
    assert query(stack, 'e2i_daemon_heartbeat_timestamp_seconds{daemon="SENSOR"}')
    posted = query(stack, 'e2i_api_requests_total{route="/v1/runs",method="POST",status="202"}')
    assert posted[0]["value"][1] == "1"
    targets = httpx.get(f"http://127.0.0.1:{stack.prometheus_port}/api/v1/targets", timeout=10).json()
    health = {t["labels"]["job"]: t["health"] for t in targets["data"]["activeTargets"]}
    assert health["e2i-api"] == "up" and health["e2i-exporter"] == "up", health

    # the daemon's cost sensor tags the run (every 30 s); the exporter and /v1/costs sum it
    (cost,) = query(stack, 'e2i_run_cost_total{job_name="probe_light_job",tier="light"}', timeout=240)
    with api(stack) as client:
        body = client.get("/v1/costs", params={"group_by": "job"}).json()
    (group,) = [g for g in body["groups"] if g["key"] == "probe_light_job"]
    assert group["runs"] == 1 and float(group["cost"]) == pytest.approx(float(cost["value"][1]), abs=1e-6)
