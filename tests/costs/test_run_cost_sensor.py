"""The run-cost sensor on a real Postgres instance: runs of known tier and wall time get exact
costs once, on their tags and their assets; OOM-killed runs and promotions both count."""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRunStatus

from e2i_pipelines.defs.monitoring.sensors import cost_finished_runs, run_cost_sensor
from e2i_pipelines.launcher.promotion import FAILURE_TAG, PARENT_RUN_TAG, PROMOTED_FROM_TAG
from e2i_pipelines.monitoring.cost import COST_TAG, CostedRun, format_micros, sum_costs
from tests.costs.runs import add_run

T0 = 1_780_000_000.0  # 2026-05-28 UTC


def _seed(instance: dg.DagsterInstance) -> dict[str, str]:
    ids = {
        "heavy_ok": add_run(instance, "causal_job", "heavy", start=T0, seconds=90,
                            assets=("causal_estimate",)),
        "medium_oom": add_run(instance, "shap_job", "medium", start=T0 + 100, seconds=45,
                              status=DagsterRunStatus.FAILURE, tags={FAILURE_TAG: "oom"},
                              assets=("shap_explanations",)),
        "light_hour": add_run(instance, "probe_light_job", "light", start=T0 + 86_400, seconds=3600),
        "never": add_run(instance, "probe_light_job", "light", start=None, seconds=None,
                         status=DagsterRunStatus.CANCELED),
    }
    ids["promoted"] = add_run(instance, "shap_job", "heavy", start=T0 + 200, seconds=120,
                              tags={PARENT_RUN_TAG: ids["medium_oom"], PROMOTED_FROM_TAG: "medium"},
                              assets=("shap_explanations",))
    return ids


EXPECTED = {"heavy_ok": "0.016000",     # 0.640/h x 90 s
            "medium_oom": "0.002000",   # 0.160/h x 45 s
            "light_hour": "0.072000",   # 0.072/h x 3600 s
            "never": "0.000000",
            "promoted": "0.021333"}     # 0.640/h x 120 s = 0.0213333..


def _costed(instance: dg.DagsterInstance) -> list[CostedRun]:
    return [CostedRun.from_tags(r.dagster_run.run_id, r.dagster_run.job_name, r.dagster_run.tags,
                                r.end_time) for r in instance.get_run_records()]


def test_each_finished_run_is_costed_once_exactly(pg_instance: dg.DagsterInstance) -> None:
    ids = _seed(pg_instance)
    costed, cursor = cost_finished_runs(pg_instance, None)
    assert costed == 5
    for name, run_id in ids.items():
        run = pg_instance.get_run_by_id(run_id)
        assert run.tags[COST_TAG] == EXPECTED[name], name
        assert run.tags["e2i/cost_currency"] == "USD"
    assert "x 90.000 s" in pg_instance.get_run_by_id(ids["heavy_ok"]).tags["e2i/cost_basis"]

    # again (and again from scratch): nothing is costed twice, tags unchanged
    assert cost_finished_runs(pg_instance, cursor)[0] == 0
    assert cost_finished_runs(pg_instance, None)[0] == 0
    observations = pg_instance.fetch_observations(dg.AssetKey("shap_explanations"), limit=10).records
    assert len(observations) == 2  # the OOM-killed run and its promotion
    costs = sorted(o.asset_observation.metadata[COST_TAG].value for o in observations)
    assert costs == [0.002, 0.021333]

    by_tier = {g.key: g for g in sum_costs(filter(None, _costed(pg_instance)), "tier")}
    assert format_micros(by_tier["heavy"].micros) == "0.037333"
    assert format_micros(by_tier["medium"].oom_micros) == "0.002000" and by_tier["medium"].oom_runs == 1
    by_job = {g.key: g for g in sum_costs(filter(None, _costed(pg_instance)), "job")}
    assert format_micros(by_job["shap_job"].micros) == "0.023333"  # what the OOM cost us, in all
    assert by_job["shap_job"].oom_micros == 2000
    by_day = {g.key: g.micros for g in sum_costs(filter(None, _costed(pg_instance)), "day")}
    assert by_day.pop("2026-05-28") == 39_333 and by_day.pop("2026-05-29") == 72_000
    assert list(by_day.values()) == [0]  # the canceled run that never started ended today


def test_sensor_keeps_a_cursor_and_skips(pg_instance: dg.DagsterInstance) -> None:
    add_run(pg_instance, "causal_job", "heavy", start=T0, seconds=3600)
    context = dg.build_sensor_context(instance=pg_instance)
    result = run_cost_sensor(context)
    assert "costed 1" in result.skip_message
    assert float(context.cursor) > 0
    assert "costed 0" in run_cost_sensor(context).skip_message


def test_many_runs_sum_exactly_to_the_cent(pg_instance: dg.DagsterInstance) -> None:
    # 40 heavy runs of 1..40 minutes: 0.640/h x k min = 0.010666.. x k, rounded per run
    for k in range(1, 41):
        add_run(pg_instance, "twins_job", "heavy", start=T0 + k * 10_000, seconds=60 * k)
    while cost_finished_runs(pg_instance, None)[0]:
        pass
    (group,) = sum_costs(filter(None, _costed(pg_instance)), "job")
    from decimal import ROUND_HALF_UP, Decimal
    expected = sum(int((Decimal("0.640") * 60 * k / 3600 * 10**6).to_integral_value(ROUND_HALF_UP))
                   for k in range(1, 41))
    assert group.runs == 40 and group.micros == expected
    # and the total price x total time agrees to the cent
    total_hours = Decimal(60 * sum(range(1, 41))) / 3600
    assert abs(Decimal(group.micros) / 10**6 - Decimal("0.640") * total_hours) < Decimal("0.01")


def test_code_location_runs_the_sensor_and_the_daily_report() -> None:
    from e2i_pipelines.definitions import defs
    from e2i_pipelines.tiers import Tier, asset_tiers

    sensor = defs.resolve_sensor_def("e2i_run_costs")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    schedule = defs.resolve_schedule_def("run_costs_daily")
    assert schedule.cron_schedule == "15 0 * * *" and schedule.execution_timezone == "UTC"
    assert asset_tiers(defs)["run_costs"] == Tier.LIGHT
