"""The platform exporter against a real Postgres instance holding runs of known status, tier, pool,
duration and launch latency, a stored scaler decision and a daemon heartbeat; read over HTTP."""

from __future__ import annotations

import time

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._daemon.types import DaemonHeartbeat

from e2i_pipelines.defs.monitoring.sensors import cost_finished_runs
from e2i_pipelines.launcher.promotion import FAILURE_TAG, PARENT_RUN_TAG, PROMOTED_FROM_TAG
from tests.costs.runs import add_run
from tests.monitoring.exporter_http import exporter_port, scrape
from tests.monitoring.scaler_state import decision_record, store_decisions
from tests.scaler.queued_runs import queue_run


def test_exporter_reports_runs_queue_cap_latency_oom_and_cost(pg_instance: dg.DagsterInstance) -> None:
    now = time.time()
    add_run(pg_instance, "causal_job", "heavy", start=now - 500, seconds=400, launched_before=3,
            first_step_after=7.5)
    oom = add_run(pg_instance, "shap_job", "medium", start=now - 300, seconds=40, launched_before=2,
                  first_step_after=1.5, status=DagsterRunStatus.FAILURE, tags={FAILURE_TAG: "oom"})
    add_run(pg_instance, "shap_job", "heavy", start=now - 200, seconds=100,
            tags={PARENT_RUN_TAG: oom, PROMOTED_FROM_TAG: "medium"})
    add_run(pg_instance, "old_job", "light", start=now - 90_000, seconds=10)  # before the backfill
    for job in ("twins_job", "twins_job", "probe_light_job"):  # real plans: pools and tiers
        queue_run(pg_instance, job)
    cost_finished_runs(pg_instance, None)
    store_decisions(pg_instance, [decision_record(now - 10, 1, demand=3, capacity=1, hi=4, queued=2,
                                                  running=1, bound_by="capacity")])
    pg_instance.add_daemon_heartbeat(DaemonHeartbeat(now - 5, "SENSOR", "d1", None))
    pg_instance.event_log_storage.set_concurrency_slots("e2i-heavy", 1)

    with exporter_port(pg_instance) as port:
        m = scrape(port)
        assert m[("e2i_exporter_instance_up", ())] == 1
        assert m[("e2i_runs", (("job_name", "twins_job"), ("status", "QUEUED"), ("tier", "heavy")))] == 2
        assert m[("e2i_runs", (("job_name", "shap_job"), ("status", "FAILURE"), ("tier", "medium")))] == 1
        assert m[("e2i_run_queue_depth", (("pool", "e2i-heavy"),))] == 2
        assert m[("e2i_run_queue_depth", (("pool", "none"),))] == 1
        assert m[("e2i_run_queue_depth", (("pool", "e2i-medium"),))] == 2  # twins has medium steps too
        assert 0 <= m[("e2i_run_queue_oldest_age_seconds", (("pool", "e2i-heavy"),))] < 600
        assert m[("e2i_pool_limit", (("pool", "e2i-heavy"),))] == 1
        assert m[("e2i_heavy_cap", ())] == 1
        for name, value in {"demand": 3, "capacity": 1, "min": 0, "max": 4, "queued": 2, "running": 1}.items():
            assert m[("e2i_heavy_cap_input", (("input", name),))] == value, name
        assert m[("e2i_heavy_cap_bound_by", (("input", "capacity"),))] == 1
        assert m[("e2i_oom_kills_total", (("tier", "medium"),))] == 1
        assert m[("e2i_oom_kills_total", (("tier", "heavy"),))] == 0
        assert m[("e2i_run_promotions_total", (("from_tier", "medium"), ("to_tier", "heavy")))] == 1
        # durations: heavy 400 s and 100 s, medium 40 s; the light run ended a day ago (not observed)
        assert m[("e2i_run_duration_seconds_count", (("tier", "heavy"),))] == 2
        assert m[("e2i_run_duration_seconds_sum", (("tier", "heavy"),))] == 500
        assert m[("e2i_run_duration_seconds_bucket", (("le", "120.0"), ("tier", "heavy")))] == 1
        assert m[("e2i_run_duration_seconds_count", (("tier", "light"),))] == 0
        assert m[("e2i_run_launch_to_first_step_seconds_sum", (("tier", "heavy"),))] == 7.5
        assert m[("e2i_run_launch_to_first_step_seconds_sum", (("tier", "medium"),))] == 1.5
        # 0.640/h x 400 s + 0.640/h x 100 s = 0.071111 + 0.017778
        assert abs(m[("e2i_run_cost_total", (("currency", "USD"), ("job_name", "shap_job"), ("tier", "heavy")))]
                   - 0.017778) < 1e-9
        assert abs(now - 5 - m[("e2i_daemon_heartbeat_timestamp_seconds", (("daemon", "SENSOR"),))]) < 1e-3

        # the next scrape reads only what changed: a queued run starts, nothing is observed twice
        add_run(pg_instance, "twins_job", "heavy", start=time.time() - 10, seconds=10)
        m = scrape(port)
        assert m[("e2i_run_duration_seconds_count", (("tier", "heavy"),))] == 3
        assert m[("e2i_runs", (("job_name", "twins_job"), ("status", "SUCCESS"), ("tier", "heavy")))] == 1
