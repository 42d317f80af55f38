"""Read the instance (heavy runs, pool limit, launcher, host) and decide; apply writes the limit.

A heavy run is one whose execution plan touches the heavy pool: Dagster stores the hidden tag
``.dagster/pool/e2i-heavy=true`` on every such run at creation (UI, sensor, schedule, backfill,
ad-hoc asset runs alike), and that pool is exactly what the run queue enforces.

A run in progress counts at the tier its launcher recorded (``e2i/tier`` beside ``e2i/limits``):
a ``tier: auto`` run of a heavy-pooled job launched at light is not heavy, an auto or promoted run
launched at heavy is, pool tag or not. Queued runs, not sized yet, count by their pool tag.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.storage.dagster_run import ACTIVE_RUN_STATUSES
from dagster._core.storage.tags import POOL_TAG_PREFIX

from e2i_pipelines.launcher.promotion import LIMITS_TAG
from e2i_pipelines.scaler.capacity import HostCapacity, docker_client_from_env, measure_capacity
from e2i_pipelines.scaler.config import ScalerConfig
from e2i_pipelines.scaler.decision import Decision, decide
from e2i_pipelines.scaler.profile import HeavyProfile, resolve_heavy_profile
from e2i_pipelines.scaler.ray_capacity import RayCapacity
from e2i_pipelines.tiers import HEAVY_POOL, TIER_TAG, Tier

HEAVY_POOL_TAG = f"{POOL_TAG_PREFIX}{HEAVY_POOL}"
"""Run tag Dagster sets on runs whose plan touches the heavy pool."""


@dataclass(frozen=True)
class ScalerEvaluation:
    """A decision plus the measurements behind it."""

    decision: Decision
    capacity: HostCapacity | RayCapacity | None
    heavy_profile: HeavyProfile | None
    config: ScalerConfig
    pool: str
    evaluated_at: float

    def record(self) -> dict[str, Any]:
        """JSON-ready record of the decision and all its inputs (the sensor's cursor)."""
        return {
            "pool": self.pool,
            "evaluated_at": self.evaluated_at,
            "decision": self.decision.as_dict(),
            "summary": self.decision.summary(),
            "capacity": self.capacity.as_dict() if self.capacity else None,
            "heavy_profile": self.heavy_profile.as_dict() if self.heavy_profile else None,
            "heavy_need_on_host": (
                dict(zip(("cpus", "memory_bytes"), self.capacity.need_of(self.heavy_profile),
                         strict=True))
                if self.capacity and self.heavy_profile else None
            ),
            "config": self.config.as_dict(),
        }


def heavy_runs_filter(statuses: list[DagsterRunStatus]) -> RunsFilter:
    """Runs in ``statuses`` whose plan touches the heavy pool."""
    return RunsFilter(statuses=statuses, tags={HEAVY_POOL_TAG: "true"})


def counts_as_heavy(tags: dict[str, str], pooled: bool) -> bool:
    """A run in progress is heavy at the tier its launcher recorded, else when its plan touches
    the heavy pool (``pooled``: Dagster keeps that tag hidden from ``run.tags``)."""
    if LIMITS_TAG in tags:
        return tags.get(TIER_TAG) == Tier.HEAVY.value
    return pooled or tags.get(TIER_TAG) == Tier.HEAVY.value


def running_heavy_run_ids(instance: DagsterInstance) -> list[str]:
    """Runs in progress that count as heavy (:func:`counts_as_heavy`) among those whose plan
    touches the heavy pool or that carry ``e2i/tier=heavy``."""
    statuses = list(ACTIVE_RUN_STATUSES)
    pooled = instance.get_runs(heavy_runs_filter(statuses))
    tagged = instance.get_runs(RunsFilter(statuses=statuses, tags={TIER_TAG: Tier.HEAVY.value}))
    heavy = [run.run_id for run in pooled if counts_as_heavy(run.tags, True)]
    heavy += [run.run_id for run in tagged if counts_as_heavy(run.tags, False)]
    return list(dict.fromkeys(heavy))


def current_pool_limit(instance: DagsterInstance, pool: str = HEAVY_POOL) -> int | None:
    """The pool's limit in the event-log storage (None when the pool has none)."""
    for limit in instance.event_log_storage.get_pool_limits():
        if limit.name == pool:
            return limit.limit
    return None


def evaluate(
    instance: DagsterInstance,
    config: ScalerConfig,
    docker_client_factory: Callable[[], Any] = docker_client_from_env,
) -> ScalerEvaluation:
    """Decide the heavy cap now. Capacity is only measured when there is heavy demand."""
    queued = instance.get_runs_count(heavy_runs_filter([DagsterRunStatus.QUEUED]))
    running_ids = running_heavy_run_ids(instance)
    capacity = profile = None
    slots = None
    if queued + len(running_ids):
        launcher = instance.run_launcher
        profile = resolve_heavy_profile(launcher, config.heavy_profile)
        capacity = measure_capacity(
            config.capacity_source, launcher, set(running_ids), docker_client_factory, config.reserve
        ).with_override(config.capacity)
        slots = capacity.slots_for(profile)
    decision = decide(
        min_heavy_runs=config.min_heavy_runs,
        max_heavy_runs=config.max_heavy_runs,
        queued=queued,
        running=len(running_ids),
        capacity_slots=slots,
        current_limit=current_pool_limit(instance),
    )
    return ScalerEvaluation(
        decision=decision, capacity=capacity, heavy_profile=profile, config=config,
        pool=HEAVY_POOL, evaluated_at=time.time(),
    )


def apply(instance: DagsterInstance, evaluation: ScalerEvaluation) -> bool:
    """Write the pool limit when it changes (returns whether it wrote). Running runs are never
    touched: a lower limit only holds queued runs."""
    if not evaluation.decision.changed:
        return False
    instance.event_log_storage.set_concurrency_slots(evaluation.pool, evaluation.decision.allowed)
    return True
