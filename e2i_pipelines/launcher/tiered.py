"""What every e2i run launcher shares, whatever the engine (Docker, Ray, Kubernetes).

:class:`TieredLauncherMixin` holds the tier profiles and the promotion switch from the launcher
config, resolves a run's tier (``run_tier``: run tag, else execution plan), records it on the run
(``record_tier``: ``e2i/tier``, ``e2i/limits`` tags + an engine event), records a diagnosis
(``record_failure``: ``e2i/failure`` tags + engine event) and turns a diagnosis into the run
monitoring result (``health_result``). Each launcher only says how to find out why its run
worker stopped (``diagnose``) and whether a run is its own (``owns_run``); the OOM promotion
sensor works on any of them through this interface.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from dagster import Field, Permissive
from dagster._core.events import EngineEventData
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun

from e2i_pipelines.launcher.oom import MISSING, OOM, ContainerDiagnosis
from e2i_pipelines.launcher.profiles import parse_profiles
from e2i_pipelines.launcher.promotion import (
    FAILURE_REASON_TAG,
    FAILURE_TAG,
    LIMITS_TAG,
    TIER_SOURCE_TAG,
)
from e2i_pipelines.launcher.run_tier import RunTier, tier_for_run
from e2i_pipelines.tiers import TIER_TAG, TierProfile

TIER_ENV = "E2I_TIER"
"""Environment variable naming the run's tier inside its worker (container, Ray job or pod)."""

TIER_CONFIG_FIELDS: dict[str, Field] = {
    "tiers": Field(
        Permissive(), is_required=False,
        description="Tier name -> {cpus, memory, memswap, pids, shm}; missing fields keep"
        " the production defaults (light 2/2g, medium 4/8g, heavy 16/32g).",
    ),
    "promote_on_oom": Field(
        bool, is_required=False, default_value=True,
        description="Re-launch an OOM-killed run once at the next tier (e2i OOM sensor).",
    ),
}
"""Launcher config keys every tiered launcher accepts beside its engine's own."""


class TieredLauncherMixin:
    """Tier sizing and failure recording shared by the Docker, Ray and Kubernetes launchers.

    Subclasses call :meth:`init_tiers` in ``__init__`` and implement :meth:`diagnose` and
    :meth:`owns_run`; ``self._instance`` comes from Dagster's ``RunLauncher``.
    """

    tier_profiles: dict
    promote_on_oom: bool
    _instance: Any

    def init_tiers(self, tiers: Mapping[str, Any] | None, promote_on_oom: bool) -> None:
        """Validate the ``tiers`` config (raises TierProfileError naming the field)."""
        self.tier_profiles = parse_profiles(tiers)
        self.promote_on_oom = promote_on_oom

    # -- sizing ------------------------------------------------------------------------------
    def run_tier(self, run: DagsterRun) -> tuple[RunTier, TierProfile]:
        """The run's tier (run tag, else execution plan) and that tier's profile."""
        resolved = tier_for_run(self._instance, run)
        return resolved, self.tier_profiles[resolved.tier]

    def record_tier(self, run: DagsterRun, resolved: RunTier, limits: str,
                    extra: Mapping[str, str] | None = None) -> DagsterRun:
        """Tag the run with its tier and limits, report them as an engine event; return the run
        as stored now (with the new tags)."""
        self._instance.add_run_tags(
            run.run_id,
            {TIER_TAG: resolved.tier.value, TIER_SOURCE_TAG: resolved.source, LIMITS_TAG: limits,
             **(extra or {})},
        )
        profile = self.tier_profiles[resolved.tier]
        self._instance.report_engine_event(
            message=f"e2i tier {resolved.tier.value} (from {resolved.source}): {limits}",
            dagster_run=run,
            engine_event_data=EngineEventData(
                metadata={"tier": resolved.tier.value, "tier_source": resolved.source,
                          **{k: str(v) for k, v in profile.as_dict().items()}}
            ),
            cls=self.__class__,
        )
        return self._instance.get_run_by_id(run.run_id) or run

    # -- diagnosis ---------------------------------------------------------------------------
    def owns_run(self, run: DagsterRun) -> bool:
        """True when ``run`` was launched by this launcher (it has a worker to diagnose)."""
        raise NotImplementedError

    def diagnose(self, run: DagsterRun, include_failed_steps: bool = False) -> ContainerDiagnosis | None:
        """Why the run's worker stopped; None while it is still alive."""
        raise NotImplementedError

    def record_failure(self, run: DagsterRun, diagnosis: ContainerDiagnosis) -> None:
        """Put the diagnosis on the run: ``e2i/failure`` tags and an engine event (once)."""
        current = self._instance.get_run_by_id(run.run_id) or run
        if current.tags.get(FAILURE_TAG) == diagnosis.kind:
            return
        self._instance.add_run_tags(
            run.run_id, {FAILURE_TAG: diagnosis.kind, FAILURE_REASON_TAG: diagnosis.message}
        )
        self._instance.report_engine_event(
            message=diagnosis.message,
            dagster_run=current,
            engine_event_data=EngineEventData(
                metadata={"failure": diagnosis.kind, "exit_code": str(diagnosis.exit_code)}
            ),
            cls=self.__class__,
        )

    def diagnose_finished_run(self, run: DagsterRun, wait_seconds: float = 30.0) -> ContainerDiagnosis | None:
        """For a run that already ended: wait for its worker to stop, then record an OOM kill.

        Covers the multiprocess executor, where the kernel kills the step's child process, the
        run worker reports the step failure itself and stops afterwards.
        """
        if not self.owns_run(run):
            return None
        deadline = time.monotonic() + wait_seconds
        diagnosis = self.diagnose(run, include_failed_steps=True)
        while diagnosis is None and time.monotonic() < deadline:
            time.sleep(0.5)
            diagnosis = self.diagnose(run, include_failed_steps=True)
        if diagnosis is not None and diagnosis.kind == OOM:
            self.record_failure(run, diagnosis)
        return diagnosis

    def health_result(self, run: DagsterRun) -> CheckRunHealthResult:
        """Run monitoring's answer for ``run``: RUNNING while alive, else FAILED/NOT_FOUND with
        the diagnosis recorded on the run."""
        diagnosis = self.diagnose(run)
        if diagnosis is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        current = self._instance.get_run_by_id(run.run_id)
        if diagnosis.is_failure and current is not None and not current.is_finished:
            self.record_failure(run, diagnosis)
        status = WorkerStatus.NOT_FOUND if diagnosis.kind == MISSING else WorkerStatus.FAILED
        return CheckRunHealthResult(status, msg=diagnosis.message)
