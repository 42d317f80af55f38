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

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from dagster import Field, Permissive
from dagster._core.events import EngineEventData
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

from e2i_pipelines.core.prices import PriceTable, parse_prices
from e2i_pipelines.launcher.oom import (
    MISSING,
    OOM,
    STEP_EVENT_TYPES,
    ContainerDiagnosis,
    diagnose_state,
    exit_record_state,
    unfinished_steps,
)
from e2i_pipelines.launcher.profiles import parse_profiles
from e2i_pipelines.launcher.promotion import (
    FAILURE_REASON_TAG,
    FAILURE_TAG,
    LIMITS_TAG,
    TIER_SOURCE_TAG,
    WORKER_EXIT_TAG,
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
    "prices": Field(
        Permissive(), is_required=False,
        description="Run cost prices: {currency, per_vcpu_hour, per_gb_hour, tiers: {tier:"
        " {per_vcpu_hour, per_gb_hour} or {per_hour}}}; default: the reference VM of"
        " docs/deploy.md (e2i_pipelines/core/prices.py).",
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
    prices: PriceTable
    _instance: Any

    def init_tiers(self, tiers: Mapping[str, Any] | None, promote_on_oom: bool,
                   prices: Mapping[str, Any] | None = None) -> None:
        """Validate the ``tiers`` and ``prices`` config (errors name the field)."""
        self.tier_profiles = parse_profiles(tiers)
        self.promote_on_oom = promote_on_oom
        self.prices = parse_prices(prices)

    # -- sizing ------------------------------------------------------------------------------
    def run_tier(self, run: DagsterRun) -> tuple[RunTier, TierProfile]:
        """The run's tier (run tag, else execution plan) and that tier's profile."""
        resolved = tier_for_run(self._instance, run, self.tier_profiles)
        return resolved, self.tier_profiles[resolved.tier]

    def record_tier(self, run: DagsterRun, resolved: RunTier, limits: str,
                    extra: Mapping[str, str] | None = None) -> DagsterRun:
        """Tag the run with its tier and limits, report them as an engine event; return the run
        as stored now (with the new tags)."""
        self._instance.add_run_tags(
            run.run_id,
            {TIER_TAG: resolved.tier.value, TIER_SOURCE_TAG: resolved.source, LIMITS_TAG: limits,
             **resolved.tags, **(extra or {})},
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

    def worker_identity(self, run: DagsterRun) -> tuple[str, str]:
        """How diagnoses name the run's worker: (kind, id), e.g. ("Run container", "3f2a...")."""
        return "Run worker", ""

    def record_placement(self, run: DagsterRun) -> str | None:
        """Tag the run with the node its worker runs on, once known; launchers that choose a node
        (Ray) override this. Called by run monitoring and when the worker exits."""
        return None

    def record_worker_exit(self, run: DagsterRun, record: Mapping[str, Any]) -> ContainerDiagnosis | None:
        """Record the run worker's own exit ``record`` (from run_worker) on the run.

        An OOM kill counted in the worker's memory cgroup (the whole run worker or only a step
        process) becomes ``e2i/failure=oom`` with the diagnosis, through the same
        :func:`diagnose_state` run monitoring uses; a worker that died before the run finished
        fails the run with the diagnosis. ``e2i/worker_exit`` is written last: once it is there,
        the failure tags are final (the OOM promotion sensor waits for it). Returns the recorded
        diagnosis, None when there was nothing to record.
        """
        with contextlib.suppress(Exception):  # placement is information; the exit comes first
            self.record_placement(run)
        current = self._instance.get_run_by_id(run.run_id) or run
        diagnosis = None
        unfinished = not current.is_finished
        ended_badly = record.get("oom_kills") or (unfinished and record.get("exit_code") != 0)
        if ended_badly and current.status != DagsterRunStatus.SUCCESS:
            worker, worker_id = self.worker_identity(current)
            resolved, profile = self.run_tier(current)
            events = self._instance.all_logs(run.run_id, of_type=STEP_EVENT_TYPES)
            diagnosis = diagnose_state(
                exit_record_state(record), tier=resolved.tier.value, memory=profile.memory,
                steps=unfinished_steps(events, include_failed=not unfinished),
                container_id=worker_id, worker=worker,
            )
            self.record_failure(current, diagnosis)
            if unfinished:
                self._instance.report_run_failed(current, message=diagnosis.message)
        summary = {k: record.get(k) for k in ("exit_code", "signal", "oom_kills")}
        self._instance.add_run_tags(run.run_id, {WORKER_EXIT_TAG: json.dumps(summary, sort_keys=True)})
        return diagnosis

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

    def cancel_unless_finished(self, run_id: str, message: str, timeout: float,
                               settled: Callable[[DagsterRun], bool]) -> None:
        """After a terminate request: poll every 0.5 s until ``settled(run)`` or ``timeout``
        seconds, then mark the run canceled with ``message`` if its worker did not finish it."""
        deadline = time.monotonic() + timeout
        run = self._instance.get_run_by_id(run_id)
        while run is not None and not settled(run) and time.monotonic() < deadline:
            time.sleep(0.5)
            run = self._instance.get_run_by_id(run_id)
        run = self._instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            self._instance.report_run_canceled(run, message=message)

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
