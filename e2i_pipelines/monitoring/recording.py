"""Record a finished run's cost once: run tags and an observation on each asset it planned."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg
from dagster._core.storage.dagster_run import RunRecord

from e2i_pipelines.core.prices import PriceTable, parse_prices
from e2i_pipelines.launcher.run_tier import planned_targets, tier_for_run
from e2i_pipelines.launcher.step_inputs import STEP_INPUTS_TAG, step_tags
from e2i_pipelines.launcher.tiered import TieredLauncherMixin
from e2i_pipelines.monitoring.cost import COST_BASIS_TAG, COST_TAG, RunCost, run_cost
from e2i_pipelines.tiers import DEFAULT_PROFILES, Tier, TierProfile


def budget_and_prices(instance: dg.DagsterInstance) -> tuple[Mapping[Tier, TierProfile], PriceTable]:
    """Tier profiles and prices of the instance's tiered launcher (defaults for another one)."""
    launcher = instance.run_launcher
    if isinstance(launcher, TieredLauncherMixin):
        return launcher.tier_profiles, launcher.prices
    return DEFAULT_PROFILES, parse_prices(None)


def record_run_cost(instance: dg.DagsterInstance, record: RunRecord,
                    profiles: Mapping[Tier, TierProfile], prices: PriceTable) -> RunCost | None:
    """Tag a finished run with its cost and observe it on its assets; None if already costed."""
    run = record.dagster_run
    if COST_TAG in run.tags or not run.is_finished:
        return None
    tier = tier_for_run(instance, run).tier
    cost = run_cost(tier, profiles[tier], prices, record.start_time, record.end_time)
    assets, _ = planned_targets(instance, run.run_id)
    for key in assets:
        instance.report_runless_asset_event(dg.AssetObservation(
            asset_key=key,
            metadata={
                COST_TAG: dg.MetadataValue.float(float(cost.amount)),
                COST_BASIS_TAG: dg.MetadataValue.text(cost.basis),
                "e2i/cost_currency": dg.MetadataValue.text(cost.currency),
                "e2i/run": dg.MetadataValue.dagster_run(run.run_id),
                "e2i/run_status": dg.MetadataValue.text(run.status.value),
            },
            description=f"cost of run {run.run_id} ({run.status.value}), shared by {len(assets)} asset(s)",
        ))
    # Tags last: once they are there the run is costed, so a crash before them only repeats
    # the observations, never the tag. A run without the e2i run worker (default launcher,
    # execute_in_process) gets its per-step usage from its events here.
    steps = step_tags(instance, run.run_id) if STEP_INPUTS_TAG not in run.tags else {}
    instance.add_run_tags(run.run_id, {**steps, **cost.tags()})
    return cost
