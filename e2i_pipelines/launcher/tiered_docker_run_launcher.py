"""TieredDockerRunLauncher: dagster-docker's DockerRunLauncher, one container per run sized to
the run's tier, with OOM/crash diagnosis for run monitoring.

``get_container_context`` (used by launch, resume, terminate and health checks) merges the tier's
limits (mem_limit, memswap_limit, nano_cpus, pids_limit, shm_size) and thread-count env vars into
the base context. ``launch_run`` records tier + limits as run tags and an engine event.
``check_run_worker_health`` turns a dead container into a FAILED result saying why (OOM at which
tier/limit, in which step; crash; vanished) and records it as ``e2i/failure`` tags + engine event.
"""

import time
from collections.abc import Mapping
from typing import Any

import docker.errors
from dagster import Field, Permissive
from dagster._core.events import EngineEventData
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster_docker import DockerRunLauncher
from dagster_docker.container_context import DockerContainerContext
from dagster_docker.docker_run_launcher import DOCKER_CONTAINER_ID_TAG
from dagster_docker.utils import DOCKER_CONFIG_SCHEMA

from e2i_pipelines.core.budget import thread_env
from e2i_pipelines.launcher.oom import (
    OOM,
    STEP_EVENT_TYPES,
    ContainerDiagnosis,
    diagnose_state,
    unfinished_steps,
)
from e2i_pipelines.launcher.profiles import (
    container_limits,
    describe,
    effective_cpus,
    parse_profiles,
)
from e2i_pipelines.launcher.promotion import (
    FAILURE_REASON_TAG,
    FAILURE_TAG,
    LIMITS_TAG,
    TIER_SOURCE_TAG,
)
from e2i_pipelines.launcher.run_tier import RunTier, tier_for_run
from e2i_pipelines.tiers import TIER_TAG, TierProfile

TIER_ENV = "E2I_TIER"
_ALIVE = {"running", "created", "restarting", "paused"}


class TieredDockerRunLauncher(DockerRunLauncher):
    """Launch each run in its own Docker container with its tier's CPU/memory/pids limits."""

    def __init__(self, inst_data=None, tiers: Mapping[str, Any] | None = None,
                 promote_on_oom: bool = True, **docker_config: Any) -> None:
        self.tier_profiles = parse_profiles(tiers)
        self.promote_on_oom = promote_on_oom
        self._engine_cpus: int | None = None
        super().__init__(inst_data=inst_data, **docker_config)

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            **DOCKER_CONFIG_SCHEMA,
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

    # -- sizing --------------------------------------------------------------------------------
    def engine_cpus(self) -> int | None:
        """CPUs of the Docker engine (cached); None if the engine cannot be asked."""
        if self._engine_cpus is None:
            try:
                self._engine_cpus = int(self._get_client(DockerContainerContext()).info()["NCPU"])
            except Exception:  # noqa: BLE001 - sizing still works without the cap
                return None
        return self._engine_cpus

    def run_tier(self, run: DagsterRun) -> tuple[RunTier, TierProfile]:
        """The run's tier (run tag, else execution plan) and that tier's profile."""
        resolved = tier_for_run(self._instance, run)
        return resolved, self.tier_profiles[resolved.tier]

    def get_container_context(self, dagster_run: DagsterRun) -> DockerContainerContext:
        base = super().get_container_context(dagster_run)
        resolved, profile = self.run_tier(dagster_run)
        cpus = self.engine_cpus()
        env = {**thread_env(effective_cpus(profile, cpus)), TIER_ENV: resolved.tier.value}
        return DockerContainerContext(
            registry=base.registry,
            env_vars=[*base.env_vars, *(f"{key}={value}" for key, value in env.items())],
            networks=base.networks,
            container_kwargs={**base.container_kwargs, **container_limits(profile, cpus)},
        )

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        resolved, profile = self.run_tier(run)
        limits = describe(profile, self.engine_cpus())
        self._instance.add_run_tags(
            run.run_id,
            {TIER_TAG: resolved.tier.value, TIER_SOURCE_TAG: resolved.source, LIMITS_TAG: limits},
        )
        self._instance.report_engine_event(
            message=f"e2i tier {resolved.tier.value} (from {resolved.source}): {limits}",
            dagster_run=run,
            engine_event_data=EngineEventData(
                metadata={"tier": resolved.tier.value, "tier_source": resolved.source,
                          **{k: str(v) for k, v in profile.as_dict().items()}}
            ),
            cls=self.__class__,
        )
        tagged = self._instance.get_run_by_id(run.run_id) or run
        super().launch_run(LaunchRunContext(dagster_run=tagged, workspace=context.workspace))

    # -- diagnosis -------------------------------------------------------------------------------
    def diagnose(self, run: DagsterRun, include_failed_steps: bool = False) -> ContainerDiagnosis | None:
        """Why the run's container stopped; None while it is still alive."""
        container_id = run.tags.get(DOCKER_CONTAINER_ID_TAG, "")
        container = self._get_container(run)
        if container is not None and container.status in _ALIVE:
            return None
        resolved, profile = self.run_tier(run)
        events = self._instance.all_logs(run.run_id, of_type=STEP_EVENT_TYPES)
        state = container.attrs.get("State", {}) if container is not None else None
        log_tail = ""
        if state is not None and not state.get("OOMKilled") and state.get("ExitCode") not in (0, 137):
            try:
                log_tail = container.logs(tail=5).decode(errors="replace")
            except docker.errors.APIError:
                log_tail = ""
        return diagnose_state(
            state, tier=resolved.tier.value, memory=profile.memory,
            steps=unfinished_steps(events, include_failed=include_failed_steps),
            container_id=container_id, log_tail=log_tail,
        )

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
        """For a run that already ended: wait for its container to exit, then record an OOM kill.

        Covers the multiprocess executor, where the kernel kills the step's child process, the
        run worker reports the step failure itself and the container exits afterwards.
        """
        if DOCKER_CONTAINER_ID_TAG not in run.tags:
            return None
        deadline = time.monotonic() + wait_seconds
        diagnosis = self.diagnose(run, include_failed_steps=True)
        while diagnosis is None and time.monotonic() < deadline:
            time.sleep(0.5)
            diagnosis = self.diagnose(run, include_failed_steps=True)
        if diagnosis is not None and diagnosis.kind == OOM:
            self.record_failure(run, diagnosis)
        return diagnosis

    # -- run monitoring and termination ----------------------------------------------------------
    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        if not run.tags.get(DOCKER_CONTAINER_ID_TAG):
            return super().check_run_worker_health(run)
        diagnosis = self.diagnose(run)
        if diagnosis is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        current = self._instance.get_run_by_id(run.run_id)
        if diagnosis.is_failure and current is not None and not current.is_finished:
            self.record_failure(run, diagnosis)
        status = WorkerStatus.NOT_FOUND if diagnosis.kind == "container_missing" else WorkerStatus.FAILED
        return CheckRunHealthResult(status, msg=diagnosis.message)

    def terminate(self, run_id: str) -> bool:
        """Stop the run's container (base behaviour); mark the run canceled if its worker died
        before it could report that itself."""
        stopped = super().terminate(run_id)
        if not stopped:
            return False
        deadline = time.monotonic() + 5.0
        run = self._instance.get_run_by_id(run_id)
        while run is not None and not run.is_finished and time.monotonic() < deadline:
            time.sleep(0.5)
            run = self._instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            self._instance.report_run_canceled(
                run, message="Run container stopped on a terminate request."
            )
        return True
