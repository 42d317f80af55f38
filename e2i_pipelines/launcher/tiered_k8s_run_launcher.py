"""TieredK8sRunLauncher: dagster-k8s's K8sRunLauncher, one Kubernetes Job per run sized to the
run's tier, with OOM/crash diagnosis for run monitoring.

``get_container_context_for_run`` (dagster-k8s uses it for launch, resume, terminate, debug info
and health checks) merges :func:`e2i_pipelines.launcher.k8s.k8s_config` for the run's tier (resources with
requests = limits, ``/dev/shm`` emptyDir, thread env, ``e2i/tier`` pod label) over the launcher's
and the run's own ``dagster-k8s/config``; the tier wins where both set a value. ``launch_run``
records tier + limits as run tags and an engine event. ``check_run_worker_health`` turns a
terminated run pod into a FAILED result saying why (OOM at which tier/limit, in which step;
crash; vanished): the pod's container status becomes a Docker-style ``State``
(:func:`~e2i_pipelines.launcher.oom.pod_state`) diagnosed like a Docker container.

dagster.yaml::

    run_launcher:
      module: e2i_pipelines.launcher.tiered_k8s_run_launcher
      class: TieredK8sRunLauncher
      config: {<K8sRunLauncher config>, tiers: {...}, promote_on_oom: true}
"""

import sys
from collections.abc import Mapping
from typing import Any

from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._utils.error import serializable_error_info_from_exc_info
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import UserDefinedDagsterK8sConfig, get_job_name_from_run_id

from e2i_pipelines.launcher.k8s import SHM_VOLUME, byte_quantity, k8s_config
from e2i_pipelines.launcher.oom import (
    STEP_EVENT_TYPES,
    ContainerDiagnosis,
    diagnose_state,
    pod_state,
    unfinished_steps,
)
from e2i_pipelines.launcher.promotion import K8S_JOB_TAG
from e2i_pipelines.launcher.tiered import TIER_CONFIG_FIELDS, TieredLauncherMixin
from e2i_pipelines.launcher.worker_exit import OOM_EXIT_CODE


def limits_text(config: Mapping[str, Any]) -> str:
    """``e2i/limits`` text of a :func:`k8s_config` dict, e.g. ``cpu=2 memory=2Gi shm=256Mi``."""
    limits = config["container_config"]["resources"]["limits"]
    shm = next(v["empty_dir"]["size_limit"] for v in config["pod_spec_config"]["volumes"]
               if v["name"] == SHM_VOLUME)
    sizes = " ".join(f"{key}={value}" for key, value in limits.items())
    return f"{sizes} shm={shm} (requests = limits)"


def _without_shm(config: UserDefinedDagsterK8sConfig) -> UserDefinedDagsterK8sConfig:
    """``config`` minus an ``e2i-shm`` volume/mount (say from ``k8s_run_tags`` of another tier),
    so the tier's own is the only one and the pod spec has no duplicate volume name."""
    container = dict(config.container_config)
    pod_spec = dict(config.pod_spec_config)
    if "volume_mounts" in container:
        container["volume_mounts"] = [m for m in container["volume_mounts"]
                                      if m.get("name") != SHM_VOLUME]
    if "volumes" in pod_spec:
        pod_spec["volumes"] = [v for v in pod_spec["volumes"] if v.get("name") != SHM_VOLUME]
    return config._replace(container_config=container, pod_spec_config=pod_spec)


class TieredK8sRunLauncher(TieredLauncherMixin, K8sRunLauncher):
    """Launch each run as a Kubernetes Job whose pod has its tier's CPU/memory/shm budget."""

    def __init__(self, inst_data=None, tiers: Mapping[str, Any] | None = None,
                 promote_on_oom: bool = True, prices: Mapping[str, Any] | None = None, **k8s_launcher_config: Any) -> None:
        self.init_tiers(tiers, promote_on_oom, prices)
        super().__init__(inst_data=inst_data, **k8s_launcher_config)

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {**K8sRunLauncher.config_type(), **TIER_CONFIG_FIELDS}

    # -- sizing --------------------------------------------------------------------------------
    def get_container_context_for_run(self, dagster_run: DagsterRun) -> K8sContainerContext:
        base = super().get_container_context_for_run(dagster_run)
        resolved, _ = self.run_tier(dagster_run)
        tier = UserDefinedDagsterK8sConfig.from_dict(k8s_config(resolved.tier, self.tier_profiles))
        base = base._replace(run_k8s_config=_without_shm(base.run_k8s_config))
        return base.merge(K8sContainerContext(run_k8s_config=tier))

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        resolved, _ = self.run_tier(run)
        limits = limits_text(k8s_config(resolved.tier, self.tier_profiles))
        tagged = self.record_tier(
            run, resolved, limits, extra={K8S_JOB_TAG: get_job_name_from_run_id(run.run_id)}
        )
        super().launch_run(LaunchRunContext(dagster_run=tagged, workspace=context.workspace))

    # -- diagnosis -------------------------------------------------------------------------------
    def owns_run(self, run: DagsterRun) -> bool:
        # Compared with the run's own Job name: a tag copied onto a promoted run does not count.
        return run.tags.get(K8S_JOB_TAG) == get_job_name_from_run_id(run.run_id)

    def diagnose(
        self, run: DagsterRun, include_failed_steps: bool = False
    ) -> ContainerDiagnosis | None:
        """Why the run's pod stopped; None while it is pending or running."""
        namespace = self.get_container_context_for_run(run).namespace
        job_name = get_job_name_from_run_id(
            run.run_id, resume_attempt_number=self._get_resume_attempt_number(run)
        )
        pods = self._api_client.get_pods_in_job(job_name, namespace)
        if any((pod_state(pod) or {}).get("Running") for pod in pods):
            return None
        pod = max(pods, key=_created, default=None)
        state = pod_state(pod)
        resolved, profile = self.run_tier(run)
        events = self._instance.all_logs(run.run_id, of_type=STEP_EVENT_TYPES)
        return diagnose_state(
            state, tier=resolved.tier.value, memory=byte_quantity(profile.memory),
            steps=unfinished_steps(events, include_failed=include_failed_steps),
            container_id=pod.metadata.name if pod is not None else job_name,
            log_tail=self._log_tail(pod, namespace, state),
            worker="Run pod" if pod is not None else "Run pod of Job",
        )

    def _log_tail(self, pod: Any, namespace: str, state: Mapping[str, Any] | None) -> str:
        """Last lines of a crashed worker's log ("" for OOM/SIGKILL/clean exits or on error)."""
        if state is None or state.get("OOMKilled") or state.get("ExitCode") in (0, OOM_EXIT_CODE, None):
            return ""
        try:
            return self._api_client.retrieve_pod_logs(
                pod.metadata.name, namespace, container_name=pod.spec.containers[0].name,
                tail_lines=5,
            )
        except Exception:  # noqa: BLE001 - logs are a nicety; the diagnosis stands without them
            return ""

    # -- run monitoring --------------------------------------------------------------------------
    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        if not self.owns_run(run):
            return super().check_run_worker_health(run)
        try:
            return self.health_result(run)
        except Exception:  # noqa: BLE001 - API server unreachable: like K8sRunLauncher, UNKNOWN
            return CheckRunHealthResult(
                WorkerStatus.UNKNOWN, str(serializable_error_info_from_exc_info(sys.exc_info()))
            )


def _created(pod: Any) -> float:
    """Creation time of a pod as a number (0 when unknown), to pick a Job's newest pod."""
    stamp = pod.metadata.creation_timestamp if pod.metadata else None
    return stamp.timestamp() if stamp is not None else 0.0
