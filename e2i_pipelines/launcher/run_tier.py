"""A run's tier: the largest ``e2i/tier`` among the steps it executes, or its ``e2i/tier`` tag.

Reading the execution plan covers every way a run is made (UI, schedule, sensor, backfill, ad-hoc
asset selection, API). An explicit run tag wins. Unknown tier names raise ``UnknownTierError``.

``auto`` (run tag ``e2i/tier=auto``, or a step declared ``Tier.AUTO``) is sized from history by
:mod:`e2i_pipelines.launcher.sizing` when a tiered launcher resolves it with its profiles, before
launch; it then records the chosen tier as the run's ``e2i/tier``. Without profiles (displays,
cost records of runs never launched) an auto run counts at its declared tier or ceiling.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetCheckKey, AssetKey, DagsterEventType

from e2i_pipelines.launcher.promotion import PARENT_RUN_TAG, SOURCE_PROMOTION, TIER_SOURCE_TAG
from e2i_pipelines.launcher.sizing import (
    SIZING_KEY_TAG,
    TierCeilingError,
    ceiling_failure_tags,
    decide_auto,
    sizing_key,
)
from e2i_pipelines.tiers import (
    TIER_TAG,
    AutoBounds,
    Tier,
    TierProfile,
    auto_bounds,
    is_auto,
    max_tier,
    parse_tier,
    tier_of_tags,
)

SOURCE_RUN_TAG = "run tag"
SOURCE_PLAN = "execution plan"
SOURCE_DEFAULT = "default (no tiered steps)"


@dataclass(frozen=True)
class RunTier:
    """The tier a run executes at and where that came from."""

    tier: Tier
    source: str
    tags: Mapping[str, str] = field(default_factory=dict)
    """Further tags the launcher records with the tier (auto: prediction and basis)."""


def resolve_run_tier(run_tags: Mapping[str, str], step_tags: Iterable[Mapping[str, Any] | None]) -> RunTier:
    """Tier from the run tag when present (source ``promotion`` on a promoted run), else the max
    over the steps' ``e2i/tier`` op tags."""
    if TIER_TAG in run_tags:
        source = SOURCE_PROMOTION if PARENT_RUN_TAG in run_tags else SOURCE_RUN_TAG
        return RunTier(parse_tier(run_tags[TIER_TAG]), source)
    tiers = [tags[TIER_TAG] for tags in step_tags if tags and TIER_TAG in tags]
    if not tiers:
        return RunTier(Tier.LIGHT, SOURCE_DEFAULT)
    return RunTier(max_tier(tiers), SOURCE_PLAN)


def planned_steps(instance: Any, run: Any) -> list[Any]:
    """Snapshots of the steps ``run`` will execute, from its stored execution plan snapshot."""
    snapshot_id = getattr(run, "execution_plan_snapshot_id", None)
    if not snapshot_id:
        return []
    plan = instance.get_execution_plan_snapshot(snapshot_id)
    selected = set(plan.step_keys_to_execute) if plan.step_keys_to_execute else None
    return [step for step in plan.steps if selected is None or step.key in selected]


def planned_step_tags(instance: Any, run: Any) -> list[Mapping[str, Any] | None]:
    """Op tags of the steps ``run`` will execute, from its stored execution plan snapshot."""
    return [step.tags for step in planned_steps(instance, run)]


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


def auto_request(run_tags: Mapping[str, str],
                 step_tags: list[Mapping[str, Any] | None]) -> tuple[AutoBounds, Tier | None] | None:
    """Bounds and declared tier of an auto run (None when the run is not auto).

    Run tag auto: bounds from the run's floor/ceiling tags, declared = the plan's tier. Auto
    steps: floor = the largest step floor or fixed step tier, ceiling = the largest step ceiling
    (at least the floor), no declared tier (no history: the ceiling).
    """
    if is_auto(run_tags):
        declared = [t for t in (tier_of_tags(tags) for tags in step_tags) if t is not None]
        return auto_bounds(run_tags), max_tier(declared) if declared else None
    bounds = [auto_bounds(tags) for tags in step_tags]
    if not any(bounds):
        return None
    fixed = [parse_tier(tags[TIER_TAG]) for tags, b in zip(step_tags, bounds, strict=True)
             if b is None and tags and TIER_TAG in tags]
    floor = max_tier([b.floor for b in bounds if b] + fixed)
    ceiling = max_tier([b.ceiling for b in bounds if b] + [floor])
    return AutoBounds(floor, ceiling), None


def tier_for_run(instance: Any, run: Any,
                 profiles: Mapping[Tier, TierProfile] | None = None) -> RunTier:
    """The tier ``run`` executes at (run tag, else its execution plan).

    With a launcher's ``profiles`` the result also carries the run's ``e2i/sizing_key`` tag, and
    an auto run is sized from history; a prediction above its ceiling tags the run with the reason
    and raises TierCeilingError (the launch fails before anything starts).
    """
    fixed = TIER_TAG in run.tags and not is_auto(run.tags)
    if fixed and (profiles is None or SIZING_KEY_TAG in run.tags):
        return resolve_run_tier(run.tags, [])
    steps = planned_steps(instance, run)
    step_tags = [step.tags for step in steps]
    request = None if fixed else auto_request(run.tags, step_tags)
    if profiles is None:
        if request is None:
            return resolve_run_tier(run.tags, step_tags)
        bounds, declared = request
        return RunTier(declared or bounds.ceiling, "auto (not sized: no tiered launcher)")
    key = run.tags.get(SIZING_KEY_TAG) or sizing_key(step.key for step in steps)
    if request is None:
        resolved = resolve_run_tier(run.tags, step_tags)
        return RunTier(resolved.tier, resolved.source, {SIZING_KEY_TAG: key})
    bounds, declared = request
    try:
        choice = decide_auto(instance, run.tags, key, bounds, declared, profiles)
    except TierCeilingError as exc:
        instance.add_run_tags(run.run_id, {**ceiling_failure_tags(str(exc), bounds), SIZING_KEY_TAG: key})
        raise
    return RunTier(choice.tier, choice.tags[TIER_SOURCE_TAG], {**choice.tags, SIZING_KEY_TAG: key})
