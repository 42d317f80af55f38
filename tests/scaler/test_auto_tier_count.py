"""The scaler counts a ``tier: auto`` run at the tier its launcher chose (issue 29), on a real
instance with real execution plans: the launcher's own sizing (``run_tier``) and tier record
(``record_tier``) tag the runs, the scaler's evaluation counts them."""

from __future__ import annotations

import dagster as dg
from dagster import DagsterEventType, DagsterRunStatus

from e2i_pipelines.definitions import defs
from e2i_pipelines.launcher.tiered import TieredLauncherMixin
from e2i_pipelines.scaler.config import parse_config
from e2i_pipelines.scaler.evaluation import evaluate
from e2i_pipelines.tiers import TIER_CEILING_TAG, TIER_FLOOR_TAG, TIER_TAG, Tier
from tests.scaler.queued_runs import job_origin, report

CONFIG = parse_config({"max_heavy_runs": 4, "capacity": {"source": "host", "cpus": 8, "memory": "64g"},
                       "heavy_profile": {"cpus": 1, "memory": "1g"}})


class Sizer(TieredLauncherMixin):
    """The tiered launchers' sizing and tier record, without an engine."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self._instance = instance
        self.init_tiers(None, True)

    def launch(self, run: dg.DagsterRun) -> Tier:
        resolved, profile = self.run_tier(run)
        self.record_tier(run, resolved, f"{profile.cpus} CPUs, {profile.memory}")
        report(self._instance, run, DagsterEventType.RUN_START)
        return resolved.tier


def queue(instance: dg.DagsterInstance, job: str, tags: dict[str, str]) -> dg.DagsterRun:
    return instance.create_run_for_job(job_def=defs.resolve_job_def(job), status=DagsterRunStatus.QUEUED,
                                       remote_job_origin=job_origin(job), tags=tags)


def counts(instance: dg.DagsterInstance) -> tuple[int, int]:
    decision = evaluate(instance, CONFIG).decision
    return decision.queued, decision.running


def test_an_auto_run_counts_at_the_tier_it_was_launched_with():
    with dg.instance_for_test() as instance:
        sizer = Sizer(instance)
        # A heavy-pooled job run as auto with ceiling light: queued it is heavy demand (pool tag),
        # launched at light it is not.
        shrunk = queue(instance, "probe_heavy_job", {TIER_TAG: "auto", TIER_CEILING_TAG: "light"})
        assert counts(instance) == (1, 0)
        assert sizer.launch(shrunk) is Tier.LIGHT
        assert instance.get_run_by_id(shrunk.run_id).tags[TIER_TAG] == "light"
        assert counts(instance) == (0, 0)

        # A light job run as auto with floor heavy: no pool tag, not heavy demand while queued;
        # launched at heavy it holds a heavy slot.
        grown = queue(instance, "probe_light_job", {TIER_TAG: "auto", TIER_FLOOR_TAG: "heavy"})
        assert counts(instance) == (0, 0)
        assert sizer.launch(grown) is Tier.HEAVY
        assert counts(instance) == (0, 1)

        # A fixed heavy run counts as before, also before its launcher recorded the tier.
        fixed = queue(instance, "probe_heavy_job", {})
        report(instance, fixed, DagsterEventType.RUN_START)
        assert counts(instance) == (0, 2)
        assert sizer.launch(instance.get_run_by_id(fixed.run_id)) is Tier.HEAVY
        assert counts(instance) == (0, 2)

        report(instance, grown, DagsterEventType.RUN_SUCCESS)
        assert counts(instance) == (0, 1)
