"""TieredDockerRunLauncher: dagster-docker's DockerRunLauncher, one container per run sized to
the run's tier, with OOM/crash diagnosis for run monitoring.

``get_container_context`` (used by launch, resume, terminate and health checks) merges the tier's
limits (mem_limit, memswap_limit, nano_cpus, pids_limit, shm_size) and thread-count env vars into
the base context. ``launch_run`` records tier + limits as run tags and an engine event.
``check_run_worker_health`` turns a dead container into a FAILED result saying why (OOM at which
tier/limit, in which step; crash; vanished) and records it as ``e2i/failure`` tags + engine event.
The container's command is the run-worker wrapper (:mod:`e2i_pipelines.launcher.run_worker`)
around ``dagster api execute_run``: it reads the container's own memory cgroup and records an OOM
kill of a step process on the run itself, so promotion needs no Docker socket.
"""

from collections.abc import Mapping
from typing import Any

import docker.errors
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext
from dagster._core.storage.dagster_run import DagsterRun
from dagster_docker import DockerRunLauncher
from dagster_docker.container_context import DockerContainerContext
from dagster_docker.docker_run_launcher import DOCKER_CONTAINER_ID_TAG
from dagster_docker.utils import DOCKER_CONFIG_SCHEMA

from e2i_pipelines.core.budget import thread_env
from e2i_pipelines.launcher.oom import (
    STEP_EVENT_TYPES,
    ContainerDiagnosis,
    diagnose_state,
    unfinished_steps,
)
from e2i_pipelines.launcher.profiles import container_limits, describe, effective_cpus
from e2i_pipelines.launcher.tiered import TIER_CONFIG_FIELDS, TIER_ENV, TieredLauncherMixin
from e2i_pipelines.launcher.worker_exit import OOM_EXIT_CODE, worker_argv

_ALIVE = {"running", "created", "restarting", "paused"}


class TieredDockerRunLauncher(TieredLauncherMixin, DockerRunLauncher):
    """Launch each run in its own Docker container with its tier's CPU/memory/pids limits."""

    def __init__(self, inst_data=None, tiers: Mapping[str, Any] | None = None,
                 promote_on_oom: bool = True, prices: Mapping[str, Any] | None = None, **docker_config: Any) -> None:
        self.init_tiers(tiers, promote_on_oom, prices)
        self._engine_cpus: int | None = None
        super().__init__(inst_data=inst_data, **docker_config)

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            **DOCKER_CONFIG_SCHEMA,
            **TIER_CONFIG_FIELDS,
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
        resolved, profile = self.run_tier(context.dagster_run)
        tagged = self.record_tier(context.dagster_run, resolved, describe(profile, self.engine_cpus()))
        super().launch_run(LaunchRunContext(dagster_run=tagged, workspace=context.workspace))

    def _launch_container_with_command(self, run: DagsterRun, docker_image: str, command: list[str]) -> None:
        """Launch (and resume) through the run-worker wrapper; the image's Python runs it."""
        super()._launch_container_with_command(
            run, docker_image, worker_argv("python", command))

    # -- diagnosis -------------------------------------------------------------------------------
    def owns_run(self, run: DagsterRun) -> bool:
        return bool(run.tags.get(DOCKER_CONTAINER_ID_TAG))

    def worker_identity(self, run: DagsterRun) -> tuple[str, str]:
        return "Run container", run.tags.get(DOCKER_CONTAINER_ID_TAG, "")

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
        if state is not None and not state.get("OOMKilled") and state.get("ExitCode") not in (0, OOM_EXIT_CODE):
            try:
                log_tail = container.logs(tail=5).decode(errors="replace")
            except docker.errors.APIError:
                log_tail = ""
        return diagnose_state(
            state, tier=resolved.tier.value, memory=profile.memory,
            steps=unfinished_steps(events, include_failed=include_failed_steps),
            container_id=container_id, log_tail=log_tail,
        )

    # -- run monitoring and termination ----------------------------------------------------------
    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        if not self.owns_run(run):
            return super().check_run_worker_health(run)
        return self.health_result(run)

    def terminate(self, run_id: str) -> bool:
        """Stop the run's container (base behaviour); mark the run canceled if its worker died
        before it could report that itself."""
        stopped = super().terminate(run_id)
        if not stopped:
            return False
        self.cancel_unless_finished(run_id, "Run container stopped on a terminate request.",
                                    timeout=5.0, settled=lambda run: run.is_finished)
        return True
