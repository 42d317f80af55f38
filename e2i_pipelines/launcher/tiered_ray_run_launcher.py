"""TieredRayRunLauncher: dagster-ray's RayRunLauncher, each run a Ray job sized to its tier.

A run becomes a Ray job whose entrypoint asks for the tier's CPUs and memory plus one unit of the
custom resource naming the tier (``{"e2i-heavy": 1}``), so it can only land on a node that offers
that tier. Ray's ``memory`` only admits work; the hard cap is the node itself (one node per VM
in production, a memory cgroup or container of the tier's size in tests), so a run that exceeds
its tier is really killed. The entrypoint is the Ray wrapper
(:mod:`e2i_pipelines.launcher.ray_worker`: the run in a cgroup of its own below the node's, capped
at the tier's memory, so what it used is measured as on Docker) around the run-worker wrapper
(:mod:`e2i_pipelines.launcher.run_worker`), which
runs ``dagster api execute_run``, records an OOM kill on the run and logs how it ended (exit code, OOM kills in the run's
memory cgroup); ``diagnose`` turns that record and the job status into the same
:class:`~e2i_pipelines.launcher.oom.ContainerDiagnosis` the Docker launcher gives, so run
monitoring fails a dead job with the reason and the OOM sensor promotes it.

``tier: auto`` works as on Docker: :meth:`run_tier` sizes the run from history
(:func:`~e2i_pipelines.launcher.run_tier.tier_for_run`) once, ``launch_run`` tags the choice
(``e2i/tier``, ``e2i/tier_source=auto``, predicted peak, basis) and the job asks for the chosen
tier's resource, so it lands on a node of that tier.

Security: every request to the cluster carries its token (``auth_token_path``, a file, or
``RAY_AUTH_TOKEN_PATH`` / ``RAY_AUTH_TOKEN_FILE``: :mod:`e2i_pipelines.launcher.ray_auth`). A job's
runtime_env holds plain variables only: secret ones (``DAGSTER_PG_PASSWORD``, ...) are never
forwarded, the run worker reads them from ``NAME_FILE`` files on the node; and a run's
``dagster-ray/config`` tag cannot add a runtime_env or env vars (pip, working_dir, env vars are
code execution on the cluster), only the operator's config can.

Config (dagster.yaml)::

    run_launcher:
      module: e2i_pipelines.launcher.tiered_ray_run_launcher
      class: TieredRayRunLauncher
      config:
        ray: {address: "http://ray-head:8265", env_vars: [DAGSTER_PG_HOST, E2I_DATA_DIR]}
        auth_token_path: /run/secrets/ray_auth_token
        tiers: {heavy: {cpus: 16, memory: 32g}}
        promote_on_oom: true
        worker_python: python
"""

from __future__ import annotations

import functools
import logging
import shlex
from collections.abc import Mapping
from typing import Any

from dagster import Field, StringSource
from dagster._cli.api import ExecuteRunArgs  # type: ignore[attr-defined]
from dagster._core.events import EngineEventData
from dagster._core.launcher import LaunchRunContext, ResumeRunContext
from dagster._core.launcher.base import CheckRunHealthResult
from dagster._core.storage.dagster_run import DagsterRun
from dagster._grpc.types import ResumeRunArgs
from dagster_ray.configs import RayExecutionConfig
from dagster_ray.core.run_launcher import (
    RayLauncherConfig,
    RayRunLauncher,
    get_job_submission_id_from_run_id,
)
from dagster_ray.utils import resolve_env_vars_list

from e2i_pipelines.core.budget import thread_env
from e2i_pipelines.launcher import ray_auth
from e2i_pipelines.launcher.job_env import split_secrets
from e2i_pipelines.launcher.oom import (
    STEP_EVENT_TYPES,
    ContainerDiagnosis,
    diagnose_state,
    exit_record_state,
    unfinished_steps,
)
from e2i_pipelines.launcher.promotion import RAY_JOB_TAG, RAY_NODE_TAG
from e2i_pipelines.launcher.ray_worker import ray_worker_argv
from e2i_pipelines.launcher.tiered import TIER_CONFIG_FIELDS, TIER_ENV, TieredLauncherMixin
from e2i_pipelines.launcher.worker_exit import EXIT_MARKER, parse_exit_record
from e2i_pipelines.tiers import TierProfile, parse_bytes, ray_resource

_ALIVE = {"PENDING", "RUNNING"}
_LOG = logging.getLogger(__name__)


def ray_limits(profile: TierProfile, resource: str) -> str:
    """One-line summary of what a Ray run asks for, e.g. ``cpus=2 memory=2g resource e2i-light=1``."""
    return f"cpus={profile.cpus:g} memory={profile.memory} resource {resource}=1 (ray job)"


class TieredRayRunLauncher(TieredLauncherMixin, RayRunLauncher):
    """Submit each run as a Ray job sized to its tier, diagnose how it ended."""

    def __init__(self, inst_data=None, tiers: Mapping[str, Any] | None = None,
                 promote_on_oom: bool = True, prices: Mapping[str, Any] | None = None, worker_python: str = "python",
                 auth_token_path: str | None = None, **ray_config: Any) -> None:
        self.init_tiers(tiers, promote_on_oom, prices)
        self.worker_python = worker_python
        self.auth_token_path = auth_token_path or None
        super().__init__(inst_data=inst_data, **ray_config)

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            **RayRunLauncher.config_type(),
            **TIER_CONFIG_FIELDS,
            "worker_python": Field(
                str, is_required=False, default_value="python",
                description="Python on the Ray nodes that has e2i installed (runs the worker).",
            ),
            "auth_token_path": Field(
                StringSource, is_required=False,
                description="File holding the Ray cluster's auth token (RAY_AUTH_MODE=token); "
                "default: RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_FILE / RAY_AUTH_TOKEN_PATH. Never the "
                "token itself.",
            ),
        }

    @functools.cached_property
    def client(self) -> Any:
        """The Jobs API client, sending the cluster token (read from its file, not dagster.yaml)."""
        return ray_auth.job_client(self.address, self.auth_token_path, metadata=self.metadata,
                                   headers=self.headers, cookies=self.cookies)

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        extra = {k: v for k, v in config_value.items() if k != "ray"}
        return cls(inst_data=inst_data, **extra, **config_value["ray"])

    # -- sizing and launch ------------------------------------------------------------------
    def job_request(self, run: DagsterRun) -> dict[str, Any]:
        """``submit_job`` sizing kwargs for ``run``: its tier's CPUs, memory and tier resource."""
        resolved, profile = self.run_tier(run)
        return {
            "entrypoint_num_cpus": profile.cpus,
            "entrypoint_memory": parse_bytes(profile.memory),
            "entrypoint_resources": {ray_resource(resolved.tier): 1},
        }

    def entrypoint(self, args: list[str], memory_bytes: int | None = None) -> str:
        """Shell command of the Ray job: the Ray wrapper (the run's own cgroup capped at
        ``memory_bytes``, :mod:`~e2i_pipelines.launcher.ray_worker`) around the e2i run worker."""
        return shlex.join(ray_worker_argv(self.worker_python, args, memory_bytes))

    def run_entrypoint(self, run: DagsterRun, args: list[str]) -> str:
        """The entrypoint of ``run``'s job, its cgroup capped at its tier's memory."""
        _resolved, profile = self.run_tier(run)
        return self.entrypoint(args, parse_bytes(profile.memory))

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        resolved, profile = self.run_tier(run)
        submission_id = get_job_submission_id_from_run_id(run.run_id)
        run = self.record_tier(run, resolved, ray_limits(profile, ray_resource(resolved.tier)),
                               extra={RAY_JOB_TAG: submission_id})
        args = ExecuteRunArgs(
            job_origin=run.job_code_origin, run_id=run.run_id,
            instance_ref=self._instance.get_ref(), set_exit_code_on_failure=True,
        ).get_command_args()
        self._launch_ray_job(submission_id, self.run_entrypoint(run, list(args)), run)

    def resume_run(self, context: ResumeRunContext) -> None:
        run = context.dagster_run
        submission_id = get_job_submission_id_from_run_id(
            run.run_id, resume_attempt_number=context.resume_attempt_number)
        self._instance.add_run_tags(run.run_id, {RAY_JOB_TAG: submission_id})
        args = ResumeRunArgs(
            job_origin=run.job_code_origin, run_id=run.run_id,
            instance_ref=self._instance.get_ref(), set_exit_code_on_failure=True,
        ).get_command_args()
        self._launch_ray_job(submission_id, self.run_entrypoint(run, list(args)), run)

    def job_runtime_env(self, run: DagsterRun) -> tuple[dict[str, Any], list[str]]:
        """The job's runtime_env (the operator's, its env vars without secrets, plus the tier's
        thread budget) and the names of the secret variables left out."""
        resolved, profile = self.run_tier(run)
        runtime_env = dict(self.runtime_env or {})
        env = dict(runtime_env.get("env_vars", {}))
        env.update(resolve_env_vars_list(self.env_vars or []))
        env, dropped = split_secrets(env)
        env.update({**thread_env(profile.cpus), TIER_ENV: resolved.tier.value,
                    "DAGSTER_RUN_JOB_NAME": run.job_name})
        runtime_env["env_vars"] = env
        return runtime_env, dropped

    def _launch_ray_job(self, submission_id: str, entrypoint: str, run: DagsterRun) -> None:
        """Submit the job with the tier's sizing and the operator's runtime_env; a
        ``dagster-ray/config`` tag's runtime_env and env vars are ignored (see the module)."""
        from_tags: RayExecutionConfig = RayLauncherConfig.from_tags(run.tags)
        resolved, _profile = self.run_tier(run)
        runtime_env, dropped = self.job_runtime_env(run)
        ignored = [k for k in ("runtime_env", "env_vars") if getattr(from_tags, k, None)]
        if ignored or dropped:
            message = "; ".join(filter(None, [
                ignored and f"dagster-ray/config tag: {', '.join(ignored)} ignored (set by the "
                "operator's launcher config only)",
                dropped and f"not forwarded to the Ray job (secrets; the node reads NAME_FILE): "
                f"{', '.join(dropped)}",
            ]))
            _LOG.warning(f"run {run.run_id}: {message}")
            self._instance.report_engine_event(message, run, cls=self.__class__)
        request = self.job_request(run)
        self.client.submit_job(
            submission_id=submission_id, entrypoint=entrypoint, runtime_env=runtime_env,
            metadata={"dagster/job": run.job_name, "dagster/run-id": run.run_id,
                      "e2i/tier": resolved.tier.value},
            **request,
        )
        self._instance.report_engine_event(
            f"Ray job {submission_id} submitted: {request}", run,
            EngineEventData({"ray_job": submission_id, "tier": resolved.tier.value}),
            cls=self.__class__,
        )
        self.record_placement(run)  # known at once only if the job already runs; else later

    # -- placement and diagnosis ------------------------------------------------------------
    def owns_run(self, run: DagsterRun) -> bool:
        return bool(run.tags.get(RAY_JOB_TAG))

    def worker_identity(self, run: DagsterRun) -> tuple[str, str]:
        return "Ray job", run.tags.get(RAY_JOB_TAG, "")

    def _job_alive(self, run: DagsterRun) -> bool:
        """True while the run's Ray job is pending or running."""
        info = self._job_info(run)
        return info is not None and str(info.status) in _ALIVE

    def _job_info(self, run: DagsterRun) -> Any | None:
        """The Ray job's details, None when the cluster does not know the job."""
        try:
            return self.client.get_job_info(run.tags[RAY_JOB_TAG])
        except RuntimeError as exc:
            if "404" in str(exc) or "does not exist" in str(exc):
                return None
            raise

    def node_name(self, node_id: str) -> str:
        """Name (``ray start --node-name``) of node ``node_id``; the id when it has none."""
        nodes = ray_auth.list_nodes(self.address, self.auth_token_path)
        return next((n.node_name or node_id for n in nodes if n.node_id == node_id), node_id)

    def record_placement(self, run: DagsterRun) -> str | None:
        """Tag the run with the node its worker runs on (once known); return the node name."""
        current = self._instance.get_run_by_id(run.run_id) or run
        if current.tags.get(RAY_NODE_TAG):
            return current.tags[RAY_NODE_TAG]
        info = self._job_info(current)
        node_id = getattr(info, "driver_node_id", None) if info else None
        if not node_id:
            return None
        name = self.node_name(node_id)
        self._instance.add_run_tags(run.run_id, {RAY_NODE_TAG: name})
        self._instance.report_engine_event(
            f"Run worker placed on Ray node {name}", current,
            EngineEventData({"ray_node": name, "ray_node_id": node_id}), cls=self.__class__,
        )
        return name

    def diagnose(self, run: DagsterRun, include_failed_steps: bool = False) -> ContainerDiagnosis | None:
        """Why the run's Ray job ended; None while it is pending or running."""
        submission_id = run.tags.get(RAY_JOB_TAG, "")
        info = self._job_info(run)
        if info is not None and str(info.status) in _ALIVE:
            return None
        resolved, profile = self.run_tier(run)
        state = None
        log_text = ""
        if info is not None:
            try:
                log_text = self.client.get_job_logs(submission_id)
            except RuntimeError:
                log_text = ""
            state = exit_record_state(parse_exit_record(log_text) or {}, info.driver_exit_code,
                                      info.message or "")
        events = self._instance.all_logs(run.run_id, of_type=STEP_EVENT_TYPES)
        tail = "\n".join(line for line in log_text.splitlines()[-6:] if EXIT_MARKER not in line)
        return diagnose_state(
            state, tier=resolved.tier.value, memory=profile.memory,
            steps=unfinished_steps(events, include_failed=include_failed_steps),
            container_id=submission_id, log_tail=tail, worker="Ray job",
        )

    # -- run monitoring and termination ----------------------------------------------------
    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        if not self.owns_run(run):
            return super().check_run_worker_health(run)
        try:
            self.record_placement(run)
        except Exception as exc:  # noqa: BLE001 - placement is information, health comes first
            logging.getLogger(__name__).warning(f"run {run.run_id}: placement unknown ({exc})")
        return self.health_result(run)

    def terminate(self, run_id: str) -> bool:
        """Stop the run's Ray job; mark the run canceled if its worker could not say so."""
        stopped = super().terminate(run_id)
        run = self._instance.get_run_by_id(run_id)
        if run is None or not self.owns_run(run):
            return stopped
        self.cancel_unless_finished(run_id, "Ray job stopped on a terminate request.",
                                    timeout=15.0, settled=lambda run: not self._job_alive(run))
        return True
