"""The daily ``run_costs`` asset: exact sums per job x tier, OOM cost, plot, heavy idle share."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRunStatus

from e2i_pipelines.defs.monitoring.assets import run_costs
from e2i_pipelines.defs.monitoring.sensors import cost_finished_runs
from e2i_pipelines.launcher.promotion import FAILURE_TAG
from e2i_pipelines.monitoring.scaler_history import idle_share
from tests.costs.runs import add_run
from tests.monitoring.scaler_state import decision_record, store_decisions

DAY_START = 1_780_012_800.0  # 2026-05-29 00:00 UTC


def test_idle_share_of_a_known_cap_and_runs() -> None:
    # cap 2 for the first half hour, 1 for the second; one heavy run busy 45 min, starting before
    points = [(DAY_START - 600, 2), (DAY_START + 1800, 1)]
    busy = [(DAY_START - 300, DAY_START + 2700)]
    result = idle_share(points, busy, DAY_START, DAY_START + 3600)
    assert result.cap_seconds == 2 * 1800 + 1 * 1800
    assert result.busy_seconds == 2700
    assert result.share == pytest.approx(1 - 2700 / 5400)
    assert idle_share([], busy, DAY_START, DAY_START + 3600).share is None


def test_run_costs_materializes_the_day(pg_instance: dg.DagsterInstance) -> None:
    # the scaler allowed 2 heavy runs from before the day, 1 from noon
    store_decisions(pg_instance, [decision_record(DAY_START - 600, 2),
                                  decision_record(DAY_START + 43_200, 1)])
    add_run(pg_instance, "causal_job", "heavy", start=DAY_START + 60, seconds=900)       # 0.160000
    add_run(pg_instance, "causal_job", "heavy", start=DAY_START + 7200, seconds=450)     # 0.080000
    add_run(pg_instance, "shap_job", "medium", start=DAY_START + 100, seconds=90,
            status=DagsterRunStatus.FAILURE, tags={FAILURE_TAG: "oom"})                   # 0.004000
    add_run(pg_instance, "shap_job", "heavy", start=DAY_START + 300, seconds=45)         # 0.008000
    add_run(pg_instance, "causal_job", "heavy", start=DAY_START - 7200, seconds=60)      # other day
    assert cost_finished_runs(pg_instance, None)[0] == 5

    result = dg.materialize([run_costs], instance=pg_instance,
                            run_config={"ops": {"run_costs": {"config": {"day": "2026-05-29"}}}})
    (mat,) = result.asset_materializations_for_node("run_costs")
    meta = mat.metadata
    assert meta["total_cost"].value == "0.252000" and meta["runs"].value == 4
    assert meta["oom_cost"].value == "0.004000"
    rows = [r.data for r in meta["costs"].value.records]
    unmeasured = {"measured_runs": 0, "memory_waste": "0.000000", "cpu_waste": "0.000000",
                  "cpu_utilisation": "-", "low_cpu": False}  # waste: tests/costs/test_run_waste.py
    assert rows == [
        {"job": "causal_job", "tier": "heavy", "runs": 2, "cost": "0.240000", "oom_runs": 0, "oom_cost": "0.000000",
         **unmeasured},
        {"job": "shap_job", "tier": "heavy", "runs": 1, "cost": "0.008000", "oom_runs": 0, "oom_cost": "0.000000",
         **unmeasured},
        {"job": "shap_job", "tier": "medium", "runs": 1, "cost": "0.004000", "oom_runs": 1, "oom_cost": "0.004000",
         **unmeasured},
    ]
    assert meta["plot"].value.startswith("![run costs](data:image/png;base64,")
    assert meta["heavy_busy_run_seconds"].value == 900 + 450 + 45
    assert meta["heavy_cap_run_seconds"].value == 2 * 43_200 + 1 * 43_200
    assert meta["heavy_idle_share"].value == pytest.approx(1 - 1395 / 129_600)


def test_run_costs_without_scaler_decisions(pg_instance: dg.DagsterInstance) -> None:
    result = dg.materialize([run_costs], instance=pg_instance,
                            run_config={"ops": {"run_costs": {"config": {"day": "2026-05-29"}}}})
    (mat,) = result.asset_materializations_for_node("run_costs")
    assert mat.metadata["runs"].value == 0 and mat.metadata["total_cost"].value == "0.000000"
    assert mat.metadata["heavy_idle_share"].value == "no heavy capacity allowed"


def test_bad_day_fails_the_step_naming_it() -> None:
    with pytest.raises(Exception, match="day 'yesterday' is not a date"):
        dg.materialize([run_costs], run_config={"ops": {"run_costs": {"config": {"day": "yesterday"}}}})
