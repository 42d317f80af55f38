"""A run's tier: the largest ``e2i/tier`` among the steps it executes, or its ``e2i/tier`` tag.

Reading the execution plan covers every way a run is made (UI, schedule, sensor, backfill, ad-hoc
asset selection, API). An explicit run tag wins. Unknown tier names raise ``UnknownTierError``.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import AssetCheckKey, AssetKey, DagsterEventType

from e2i_pipelines.tiers import TIER_TAG, Tier, max_tier, parse_tier

SOURCE_RUN_TAG = "run tag"
SOURCE_PLAN = "execution plan"
SOURCE_DEFAULT = "default (no tiered steps)"


@dataclass(frozen=True)
class RunTier:
    """The tier a run executes at and where that came from."""

    tier: Tier
    source: str


def resolve_run_tier(run_tags: Mapping[str, str], step_tags: Iterable[Mapping[str, Any] | None]) -> RunTier:
    """Tier from the run tag when present, else the max over the steps' ``e2i/tier`` op tags."""
    if TIER_TAG in run_tags:
        return RunTier(parse_tier(run_tags[TIER_TAG]), SOURCE_RUN_TAG)
    tiers = [tags[TIER_TAG] for tags in step_tags if tags and TIER_TAG in tags]
    if not tiers:
        return RunTier(Tier.LIGHT, SOURCE_DEFAULT)
    return RunTier(max_tier(tiers), SOURCE_PLAN)


def planned_step_tags(instance: Any, run: Any) -> list[Mapping[str, Any] | None]:
    """Op tags of the steps ``run`` will execute, from its stored execution plan snapshot."""
    snapshot_id = getattr(run, "execution_plan_snapshot_id", None)
    if not snapshot_id:
        return []
    plan = instance.get_execution_plan_snapshot(snapshot_id)
    selected = set(plan.step_keys_to_execute) if plan.step_keys_to_execute else None
    return [step.tags for step in plan.steps if selected is None or step.key in selected]


def planned_targets(instance: Any, run_id: str) -> tuple[list[AssetKey], list[AssetCheckKey]]:
    """Assets and asset checks the run planned to execute (from its event log)."""
    assets = [
        entry.dagster_event.asset_key
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
        if entry.dagster_event and entry.dagster_event.asset_key
    ]
    checks = [
        entry.dagster_event.asset_check_planned_data.asset_check_key
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED)
        if entry.dagster_event
    ]
    return list(dict.fromkeys(assets)), list(dict.fromkeys(checks))


def tier_for_run(instance: Any, run: Any) -> RunTier:
    """The tier ``run`` executes at (run tag, else its execution plan)."""
    if TIER_TAG in run.tags:
        return resolve_run_tier(run.tags, [])
    return resolve_run_tier(run.tags, planned_step_tags(instance, run))
