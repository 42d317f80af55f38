"""Waste of measured runs: cost x (1 - memory utilisation) and cost x (1 - CPU utilisation), per
job and tier, in ``run_costs`` (with the jobs that waste most, the low-CPU flag and the budget
vs peak plot) on a real Postgres instance holding runs of known cost and usage."""

from __future__ import annotations

from decimal import Decimal

import dagster as dg

from e2i_pipelines.defs.monitoring.assets import run_costs
from e2i_pipelines.defs.monitoring.sensors import cost_finished_runs
from e2i_pipelines.launcher.cgroup_usage import (
    CPU_UTILISATION_TAG,
    MEMORY_UTILISATION_TAG,
    PEAK_MEMORY_TAG,
)
from e2i_pipelines.monitoring.cost import CostedRun, CostGroup, sum_costs
from tests.costs.runs import add_run

DAY_START = 1_780_012_800.0  # 2026-05-29 00:00 UTC
GIB = 1024**3


def usage(memory: str, cpu: str, peak: int = GIB) -> dict[str, str]:
    return {MEMORY_UTILISATION_TAG: memory, CPU_UTILISATION_TAG: cpu, PEAK_MEMORY_TAG: str(peak)}


def _run(micros: int, memory: str | None, cpu: str | None) -> CostedRun:
    tags = {"e2i/cost": f"{micros / 1e6:.6f}", "e2i/tier": "heavy"}
    if memory is not None:
        tags |= usage(memory, cpu)
    return CostedRun.from_tags("r", "job", tags, DAY_START)


def test_waste_of_known_runs() -> None:
    group = CostGroup("job")
    for run in (_run(160_000, "0.25", "0.10"), _run(80_000, "0.5", "0.2"), _run(8_000, None, None),
                _run(1_000, "1.7", "2")):  # over 1 (an OOM-killed run at its limit): no waste
        group.add(run)
    assert (group.runs, group.measured_runs, group.measured_micros) == (4, 3, 241_000)
    assert group.memory_waste_micros == 120_000 + 40_000
    assert group.cpu_waste_micros == 144_000 + 64_000
    assert group.cpu_utilisation == 1 - Decimal(208_000) / Decimal(241_000)
    assert group.low_cpu
    assert not CostGroup("unmeasured").low_cpu and CostGroup("x").cpu_utilisation is None
    [by_tier] = sum_costs([_run(160_000, "0.25", "0.10")], "tier")
    assert by_tier.key == "heavy" and by_tier.waste_micros == 120_000 + 144_000


def test_garbage_usage_tags_are_unmeasured() -> None:
    run = CostedRun.from_tags("r", "job", {"e2i/cost": "1.0", **usage("NaN", "-1")}, DAY_START)
    assert not run.measured and run.waste(run.memory_utilisation) == 0


def test_run_costs_names_the_waste(pg_instance: dg.DagsterInstance) -> None:
    add_run(pg_instance, "causal_job", "heavy", start=DAY_START + 60, seconds=900,      # 0.160000
            tags=usage("0.25", "0.10", 8 * GIB))
    add_run(pg_instance, "causal_job", "heavy", start=DAY_START + 7200, seconds=450,    # 0.080000
            tags=usage("0.5", "0.2", 16 * GIB))
    add_run(pg_instance, "shap_job", "medium", start=DAY_START + 100, seconds=90,       # 0.004000
            tags=usage("0.9", "0.8", 7 * GIB))
    add_run(pg_instance, "twins_job", "heavy", start=DAY_START + 300, seconds=45)       # unmeasured
    assert cost_finished_runs(pg_instance, None)[0] == 4

    result = dg.materialize([run_costs], instance=pg_instance,
                            run_config={"ops": {"run_costs": {"config": {"day": "2026-05-29"}}}})
    (mat,) = result.asset_materializations_for_node("run_costs")
    meta = mat.metadata
    rows = {(r.data["job"], r.data["tier"]): r.data for r in meta["costs"].value.records}
    causal = rows[("causal_job", "heavy")]
    assert causal["memory_waste"] == "0.160000" and causal["cpu_waste"] == "0.208000"
    assert causal["cpu_utilisation"] == "0.133" and causal["low_cpu"] is True
    shap = rows[("shap_job", "medium")]
    assert shap["memory_waste"] == "0.000400" and shap["cpu_waste"] == "0.000800"
    assert shap["low_cpu"] is False
    assert rows[("twins_job", "heavy")]["measured_runs"] == 0
    assert meta["memory_waste"].value == "0.160400" and meta["cpu_waste"].value == "0.208800"
    assert meta["top_waste"].value == "causal_job 0.368000, shap_job 0.001200"
    assert meta["low_cpu_jobs"].value == "causal_job"
    assert meta["budget_plot"].value.startswith("![budget vs peak](data:image/png;base64,")
