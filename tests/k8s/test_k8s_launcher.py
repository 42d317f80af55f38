"""TieredK8sRunLauncher: the Job manifests it builds and its diagnosis of recorded pod statuses.

No Kubernetes API server can run on the test machines. A real Dagster instance builds the
launcher from dagster.yaml-style config with a kubeconfig pointing at https://127.0.0.1:1 (never
contacted); the batch/core APIs of its dagster-k8s client are replaced by recorders that keep
the ``create_namespaced_job`` bodies and answer pod lists with recorded pods (API JSON
deserialized by the kubernetes client, as from a cluster). Runs are real runs of the
``e2i_pipelines.definitions`` probe jobs, so the tier comes from their stored execution plan.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._cli.job import _create_run
from dagster._core.execution.plan.objects import StepFailureData
from dagster._core.launcher.base import WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.test_utils import in_process_test_workspace
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._utils.error import SerializableErrorInfo
from kubernetes.client import ApiClient, V1Job, V1PodList
from kubernetes.client.rest import ApiException

from e2i_pipelines.launcher.k8s import k8s_run_tags
from e2i_pipelines.launcher.oom import CRASHED, MISSING, OOM, pod_state
from e2i_pipelines.launcher.promotion import (
    FAILURE_REASON_TAG,
    FAILURE_TAG,
    K8S_JOB_TAG,
    decide_promotion,
)
from e2i_pipelines.launcher.tiered_k8s_run_launcher import TieredK8sRunLauncher
from e2i_pipelines.tiers import Tier, UnknownTierError

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "e2i-runs"
IMAGE = "e2i:test"
SMALL = {"light": {"cpus": 0.5, "memory": "512m", "memswap": "512m", "pids": 128, "shm": "64m"},
         "heavy": {"cpus": 2, "memory": "1g", "memswap": "1g"}}


# -- recorders standing in for the Kubernetes API ------------------------------------------------
class BatchApiRecorder:
    """``BatchV1Api`` stand-in: keeps created Jobs."""

    def __init__(self) -> None:
        self.created: list[tuple[str, V1Job]] = []

    def create_namespaced_job(self, body: V1Job, namespace: str, **_: Any) -> V1Job:
        self.created.append((namespace, body))
        return body


@dataclass
class CoreApiRecorder:
    """``CoreV1Api`` stand-in: pods per Job name (recorded API JSON), pod logs, the queries made."""

    pods: dict[str, list[dict]] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    queries: list[tuple[str, str]] = field(default_factory=list)
    log_requests: list[dict] = field(default_factory=list)
    error: Exception | None = None

    def list_namespaced_pod(self, namespace: str, label_selector: str = "", **_: Any) -> V1PodList:
        if self.error is not None:
            raise self.error
        self.queries.append((namespace, label_selector))
        job_name = label_selector.removeprefix("job-name=")
        payload = {"apiVersion": "v1", "kind": "PodList", "items": self.pods.get(job_name, [])}
        return ApiClient().deserialize(SimpleNamespace(data=json.dumps(payload)), "V1PodList")

    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> SimpleNamespace:
        self.log_requests.append({"name": name, "namespace": namespace, **kwargs})
        return SimpleNamespace(data=self.logs[name].encode())


# -- recorded pods (trimmed `kubectl get pod -o json`) --------------------------------------------
def recorded_pod(job_name: str, phase: str, state: dict | None, suffix: str = "x7k2p",
                 created: str = "2025-01-07T10:00:00Z") -> dict:
    """A run pod of ``job_name`` as the API returns it; ``state``: the worker container's state."""
    statuses = [] if state is None else [{
        "name": "dagster", "image": IMAGE,
        "imageID": f"docker.io/library/{IMAGE}@sha256:{'a' * 64}",
        "containerID": f"containerd://{'c' * 64}", "ready": "running" in state,
        "restartCount": 0, "state": state,
    }]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{job_name}-{suffix}", "namespace": NAMESPACE,
                     "creationTimestamp": created, "labels": {"job-name": job_name}},
        "spec": {"containers": [{"name": "dagster", "image": IMAGE}], "restartPolicy": "Never"},
        "status": {"phase": phase, "containerStatuses": statuses},
    }


def terminated(exit_code: int, reason: str, message: str | None = None) -> dict:
    state = {"exitCode": exit_code, "reason": reason, "startedAt": "2025-01-07T10:00:05Z",
             "finishedAt": "2025-01-07T10:03:00Z"}
    return {"terminated": {**state, **({"message": message} if message else {})}}


RUNNING = {"running": {"startedAt": "2025-01-07T10:00:05Z"}}
WAITING = {"waiting": {"reason": "ContainerCreating"}}


def as_pod(data: dict) -> Any:
    return ApiClient().deserialize(SimpleNamespace(data=json.dumps(data)), "V1Pod")


# -- instance, launcher and runs ------------------------------------------------------------------
@dataclass
class K8sSetup:
    instance: dg.DagsterInstance
    workspace: Any
    batch: BatchApiRecorder
    core: CoreApiRecorder

    @property
    def launcher(self) -> TieredK8sRunLauncher:
        return self.instance.run_launcher

    def create(self, job_name: str, tags: dict[str, str] | None = None) -> DagsterRun:
        [entry] = self.workspace.get_code_location_entries().values()
        location = entry.code_location
        assert location is not None, entry.load_error
        repo = next(iter(location.get_repositories().values()))
        return _create_run(
            instance=self.instance, code_location=location, remote_repo=repo,
            remote_job=repo.get_full_job(job_name), run_config={}, tags=dict(tags or {}),
            op_selection=None, run_id=None,
        )

    def launch(self, job_name: str, tags: dict[str, str] | None = None) -> tuple[DagsterRun, V1Job]:
        """Launch a run of ``job_name``; the run as stored now and the one Job it created."""
        run = self.create(job_name, tags)
        self.instance.launch_run(run.run_id, self.workspace)
        assert len(self.batch.created) == 1, self.batch.created
        namespace, job = self.batch.created.pop()
        assert namespace == NAMESPACE
        return self.run(run.run_id), job

    def run(self, run_id: str) -> DagsterRun:
        run = self.instance.get_run_by_id(run_id)
        assert run is not None
        return run

    def step_started(self, run: DagsterRun, step: str) -> None:
        event = dg.DagsterEvent(event_type_value=dg.DagsterEventType.STEP_START.value,
                                job_name=run.job_name, step_key=step, message=f"{step} started")
        self.instance.report_dagster_event(event, run_id=run.run_id)


def write_kubeconfig(path: Path) -> Path:
    """A kubeconfig for a cluster at https://127.0.0.1:1 (nothing listens; never contacted)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "e2i-test",
        "clusters": [{"name": "e2i-test", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "e2i-test", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "e2i-test", "context": {"cluster": "e2i-test", "user": "e2i-test"}}],
    }))
    return path


@contextmanager
def k8s_setup(tmp_path: Path, **tier_config: Any) -> Iterator[K8sSetup]:
    launcher_config = {
        "service_account_name": "e2i-run", "instance_config_map": "dagster-instance",
        "dagster_home": "/opt/dagster/dagster_home", "job_image": IMAGE,
        "job_namespace": NAMESPACE, "load_incluster_config": False,
        "kubeconfig_file": str(write_kubeconfig(tmp_path / "kubeconfig")),
        "env_vars": ["E2I_DATA_DIR=/var/lib/e2i/data"], "labels": {"team": "e2i"},
        # Launcher-wide resources: the tier's replace them.
        "resources": {"limits": {"cpu": "64", "memory": "256Gi"}},
        **tier_config,
    }
    overrides = {"run_launcher": {"module": "e2i_pipelines.launcher.tiered_k8s_run_launcher",
                                  "class": "TieredK8sRunLauncher", "config": launcher_config}}
    origin = LoadableTargetOrigin(executable_path=sys.executable,
                                  module_name="e2i_pipelines.definitions",
                                  working_directory=str(REPO_ROOT))
    home = tmp_path / "home"
    home.mkdir()
    with dg.instance_for_test(overrides=overrides, temp_dir=str(home)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, TieredK8sRunLauncher)
        batch, core = BatchApiRecorder(), CoreApiRecorder()
        launcher._api_client.batch_api = batch
        launcher._api_client.core_api = core
        with in_process_test_workspace(instance, origin) as workspace:
            yield K8sSetup(instance, workspace, batch, core)


@pytest.fixture()
def k8s(tmp_path: Path) -> Iterator[K8sSetup]:
    with k8s_setup(tmp_path) as setup:
        yield setup


def container_of(job: V1Job) -> Any:
    containers = job.spec.template.spec.containers
    assert [c.name for c in containers] == ["dagster"]
    return containers[0]


def env_of(job: V1Job) -> dict[str, str]:
    return {e.name: e.value for e in container_of(job).env or []}


def shm_volumes(job: V1Job) -> list[Any]:
    return [v for v in job.spec.template.spec.volumes or [] if v.name == "e2i-shm"]


# -- sizing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("job_name", "tier", "cpu", "memory", "shm"), [
    ("probe_light_job", "light", "2", "2Gi", "256Mi"),
    ("probe_medium_job", "medium", "4", "8Gi", "1Gi"),
    ("probe_heavy_job", "heavy", "16", "32Gi", "4Gi"),
])
def test_run_pod_gets_its_plan_tier_resources(k8s: K8sSetup, job_name: str, tier: str, cpu: str,
                                              memory: str, shm: str) -> None:
    run, job = k8s.launch(job_name)
    assert job.metadata.name == f"dagster-run-{run.run_id}"
    container = container_of(job)
    assert container.image == IMAGE
    assert container.resources.limits == {"cpu": cpu, "memory": memory}
    assert container.resources.requests == {"cpu": cpu, "memory": memory}
    env = env_of(job)
    assert env["OMP_NUM_THREADS"] == env["E2I_N_JOBS"] == cpu
    assert env["E2I_TIER"] == tier
    assert env["E2I_DATA_DIR"] == "/var/lib/e2i/data"  # the launcher's own env stays
    [volume] = shm_volumes(job)
    assert (volume.empty_dir.medium, volume.empty_dir.size_limit) == ("Memory", shm)
    assert [(m.name, m.mount_path) for m in container.volume_mounts] == [("e2i-shm", "/dev/shm")]
    labels = job.spec.template.metadata.labels
    assert labels["e2i/tier"] == tier and labels["team"] == "e2i"
    assert labels["dagster/run-id"] == run.run_id
    assert job.spec.template.spec.service_account_name == "e2i-run"
    assert run.tags["e2i/tier"] == tier
    assert run.tags["e2i/tier_source"] == "execution plan"
    assert run.tags["e2i/limits"] == f"cpu={cpu} memory={memory} shm={shm} (requests = limits)"
    assert run.tags[K8S_JOB_TAG] == job.metadata.name
    assert k8s.launcher.owns_run(run)


def test_run_tag_overrides_the_plan_tier(k8s: K8sSetup) -> None:
    run, job = k8s.launch("probe_heavy_job", tags={"e2i/tier": "light"})
    assert container_of(job).resources.limits == {"cpu": "2", "memory": "2Gi"}
    assert env_of(job)["E2I_TIER"] == "light"
    assert (run.tags["e2i/tier"], run.tags["e2i/tier_source"]) == ("light", "run tag")
    run, job = k8s.launch("probe_light_job", tags={"e2i/tier": "heavy"})
    assert container_of(job).resources.requests == {"cpu": "16", "memory": "32Gi"}


def test_custom_tiers_config_changes_the_manifest(tmp_path: Path) -> None:
    with k8s_setup(tmp_path, tiers=SMALL) as k8s:
        run, job = k8s.launch("probe_light_job")
        assert container_of(job).resources.limits == {"cpu": "500m", "memory": "512Mi"}
        assert env_of(job)["OMP_NUM_THREADS"] == "1"
        assert shm_volumes(job)[0].empty_dir.size_limit == "64Mi"
        assert run.tags["e2i/limits"] == "cpu=500m memory=512Mi shm=64Mi (requests = limits)"
        _, job = k8s.launch("probe_heavy_job")
        assert container_of(job).resources.limits == {"cpu": "2", "memory": "1Gi"}
        assert shm_volumes(job)[0].empty_dir.size_limit == "4Gi"  # not set: production default
        _, job = k8s.launch("probe_medium_job")  # not in the config: production default
        assert container_of(job).resources.limits == {"cpu": "4", "memory": "8Gi"}


def test_user_k8s_config_is_merged_and_the_tier_wins(k8s: K8sSetup) -> None:
    """A run's own dagster-k8s/config (here: sized for heavy, with a node pool) keeps what the tier
    does not set; resources and /dev/shm are the tier's, with no duplicate shm volume."""
    tags = {**k8s_run_tags("heavy", node_selector={"pool": "big"}), "e2i/tier": "light"}
    _, job = k8s.launch("probe_light_job", tags=tags)
    assert container_of(job).resources.limits == {"cpu": "2", "memory": "2Gi"}
    assert [v.empty_dir.size_limit for v in shm_volumes(job)] == ["256Mi"]
    assert [m.name for m in container_of(job).volume_mounts] == ["e2i-shm"]
    assert job.spec.template.spec.node_selector == {"pool": "big"}


def test_unknown_tier_tag_fails_the_launch_clearly(k8s: K8sSetup) -> None:
    run = k8s.create("probe_light_job", tags={"e2i/tier": "gpu"})
    message = "unknown e2i tier 'gpu': expected one of light, medium, heavy"
    with pytest.raises(UnknownTierError, match=message):
        k8s.instance.launch_run(run.run_id, k8s.workspace)
    assert k8s.batch.created == []
    stored = k8s.run(run.run_id)
    assert stored.status == dg.DagsterRunStatus.FAILURE
    assert not k8s.launcher.owns_run(stored)


# -- diagnosis of recorded pod statuses ------------------------------------------------------------
def test_oom_killed_pod_is_recorded_and_promoted(k8s: K8sSetup) -> None:
    run, job = k8s.launch("probe_light_job")
    k8s.step_started(run, "probe_light")
    pod = recorded_pod(job.metadata.name, "Failed", terminated(137, "OOMKilled"))
    k8s.core.pods[job.metadata.name] = [pod]
    result = k8s.launcher.check_run_worker_health(run)
    expected = (f"Run pod {job.metadata.name}-x7k2p was OOM-killed at tier light (memory limit 2Gi)"
                " while running step probe_light (exit code 137).")
    assert (result.status, result.msg) == (WorkerStatus.FAILED, expected)
    assert k8s.core.queries == [(NAMESPACE, f"job-name={job.metadata.name}")]
    stored = k8s.run(run.run_id)
    assert stored.tags[FAILURE_TAG] == OOM
    assert stored.tags[FAILURE_REASON_TAG] == expected
    decision = decide_promotion(stored.tags, k8s.launcher.promote_on_oom)
    assert decision.tier is Tier.MEDIUM, decision.reason


def test_oom_at_heavy_is_not_promoted(k8s: K8sSetup) -> None:
    run, job = k8s.launch("probe_heavy_job")
    k8s.core.pods[job.metadata.name] = [recorded_pod(job.metadata.name, "Failed",
                                                     terminated(137, "OOMKilled"))]
    diagnosis = k8s.launcher.diagnose(run)
    assert diagnosis is not None and diagnosis.kind == OOM
    assert "at tier heavy (memory limit 32Gi) before any step started" in diagnosis.message
    k8s.launcher.check_run_worker_health(run)
    assert decide_promotion(k8s.run(run.run_id).tags, True).tier is None


def test_step_already_reported_failed_is_named_for_the_promotion_sensor(k8s: K8sSetup) -> None:
    """Multiprocess executor: the run reported the killed step as failed; the sensor's
    ``diagnose_finished_run`` still names it and records the OOM kill."""
    run, job = k8s.launch("probe_light_job")
    k8s.step_started(run, "probe_light")
    error = SerializableErrorInfo("step worker process killed (signal 9)", [], "ChildProcessCrash")
    failure = dg.DagsterEvent(event_type_value=dg.DagsterEventType.STEP_FAILURE.value,
                              job_name=run.job_name, step_key="probe_light",
                              event_specific_data=StepFailureData(error, None))
    k8s.instance.report_dagster_event(failure, run_id=run.run_id)
    k8s.core.pods[job.metadata.name] = [recorded_pod(job.metadata.name, "Failed",
                                                     terminated(137, "OOMKilled"))]
    assert "before any step started" in k8s.launcher.diagnose(run).message
    diagnosis = k8s.launcher.diagnose_finished_run(run, wait_seconds=0)
    assert diagnosis is not None and "while running step probe_light" in diagnosis.message
    assert k8s.run(run.run_id).tags[FAILURE_TAG] == OOM


def test_crashed_pod_is_crashed_with_its_log_tail(k8s: K8sSetup) -> None:
    run, job = k8s.launch("probe_medium_job")
    k8s.step_started(run, "probe_medium")
    pod = recorded_pod(job.metadata.name, "Failed", terminated(1, "Error"))
    k8s.core.pods[job.metadata.name] = [pod]
    k8s.core.logs[pod["metadata"]["name"]] = "Traceback (most recent call last):\nValueError: boom"
    result = k8s.launcher.check_run_worker_health(run)
    assert result.status == WorkerStatus.FAILED
    assert result.msg.startswith(
        f"Run pod {job.metadata.name}-x7k2p crashed with exit code 1 at tier medium"
        " (memory limit 8Gi) while running step probe_medium. Last output: Traceback")
    assert result.msg.endswith("ValueError: boom")
    assert k8s.core.log_requests == [{"name": pod["metadata"]["name"], "namespace": NAMESPACE,
                                      "container": "dagster", "_preload_content": False,
                                      "tail_lines": 5}]
    assert k8s.run(run.run_id).tags[FAILURE_TAG] == CRASHED
    assert decide_promotion(k8s.run(run.run_id).tags, True).tier is None


@pytest.mark.parametrize(("phase", "state"), [("Running", RUNNING), ("Pending", WAITING),
                                              ("Pending", None)])
def test_running_or_pending_pod_is_healthy(k8s: K8sSetup, phase: str, state: dict | None) -> None:
    run, job = k8s.launch("probe_light_job")
    # An earlier pod of the Job failed (backoff retry): a live one still means healthy.
    k8s.core.pods[job.metadata.name] = [
        recorded_pod(job.metadata.name, "Failed", terminated(1, "Error"), suffix="old00",
                     created="2025-01-07T09:00:00Z"),
        recorded_pod(job.metadata.name, phase, state),
    ]
    result = k8s.launcher.check_run_worker_health(run)
    assert (result.status, result.msg) == (WorkerStatus.RUNNING, None)
    assert k8s.launcher.diagnose(run) is None
    assert FAILURE_TAG not in k8s.run(run.run_id).tags


def test_newest_pod_of_the_job_is_diagnosed(k8s: K8sSetup) -> None:
    run, job = k8s.launch("probe_light_job")
    k8s.core.pods[job.metadata.name] = [
        recorded_pod(job.metadata.name, "Failed", terminated(137, "OOMKilled"), suffix="new00",
                     created="2025-01-07T11:00:00Z"),
        recorded_pod(job.metadata.name, "Failed", terminated(1, "Error"), suffix="old00"),
    ]
    diagnosis = k8s.launcher.diagnose(run)
    assert diagnosis.kind == OOM and f"{job.metadata.name}-new00" in diagnosis.message


def test_missing_pod_is_container_missing(k8s: K8sSetup) -> None:
    run, job = k8s.launch("probe_light_job")
    k8s.step_started(run, "probe_light")
    result = k8s.launcher.check_run_worker_health(run)
    assert result.status == WorkerStatus.NOT_FOUND
    assert result.msg == (
        f"Run pod of Job {job.metadata.name} disappeared (removed or never created) while running"
        " step probe_light at tier light; the run worker cannot report its result.")
    assert k8s.run(run.run_id).tags[FAILURE_TAG] == MISSING


def test_api_error_is_unknown_not_a_failure(k8s: K8sSetup) -> None:
    run, _ = k8s.launch("probe_light_job")
    k8s.core.error = ApiException(status=500, reason="Internal Server Error")
    result = k8s.launcher.check_run_worker_health(run)
    assert result.status == WorkerStatus.UNKNOWN and "Internal Server Error" in result.msg
    assert FAILURE_TAG not in k8s.run(run.run_id).tags


def test_owns_only_runs_it_launched(k8s: K8sSetup) -> None:
    launched, _ = k8s.launch("probe_light_job")
    assert k8s.launcher.owns_run(launched)
    created = k8s.create("probe_light_job")
    assert not k8s.launcher.owns_run(created)
    # A promoted run copies its parent's tags: the parent's Job tag does not make it owned.
    copied = k8s.create("probe_medium_job", tags={K8S_JOB_TAG: launched.tags[K8S_JOB_TAG]})
    assert not k8s.launcher.owns_run(copied)


def test_config_schema_is_k8s_plus_tiers() -> None:
    fields = TieredK8sRunLauncher.config_type()
    assert {"tiers", "promote_on_oom", "job_namespace", "instance_config_map",
            "kubeconfig_file"} <= set(fields)


# -- pod status -> Docker-style State --------------------------------------------------------------
@pytest.mark.parametrize(("phase", "state", "expected"), [
    ("Failed", terminated(137, "OOMKilled"),
     {"Status": "exited", "Running": False, "OOMKilled": True, "ExitCode": 137, "Error": ""}),
    ("Failed", terminated(1, "Error"),
     {"Status": "exited", "Running": False, "OOMKilled": False, "ExitCode": 1, "Error": ""}),
    ("Failed", terminated(128, "ContainerCannotRun"),
     {"Status": "exited", "Running": False, "OOMKilled": False, "ExitCode": 128,
      "Error": "ContainerCannotRun"}),
    ("Failed", terminated(2, "Error", "exec format error"),
     {"Status": "exited", "Running": False, "OOMKilled": False, "ExitCode": 2,
      "Error": "exec format error"}),
    ("Succeeded", terminated(0, "Completed"),
     {"Status": "exited", "Running": False, "OOMKilled": False, "ExitCode": 0, "Error": ""}),
    ("Running", RUNNING,
     {"Status": "running", "Running": True, "OOMKilled": False, "ExitCode": None, "Error": ""}),
    ("Pending", WAITING,
     {"Status": "running", "Running": True, "OOMKilled": False, "ExitCode": None, "Error": ""}),
])
def test_pod_state(phase: str, state: dict, expected: dict) -> None:
    assert pod_state(as_pod(recorded_pod("dagster-run-x", phase, state))) == expected


def test_pod_state_of_a_missing_or_evicted_pod_and_of_the_named_container() -> None:
    assert pod_state(None) is None
    evicted = recorded_pod("dagster-run-x", "Failed", None)
    evicted["status"].update(reason="Evicted", message="The node was low on resource: memory.")
    assert pod_state(as_pod(evicted)) == {
        "Status": "exited", "Running": False, "OOMKilled": False, "ExitCode": None,
        "Error": "Evicted: The node was low on resource: memory."}
    with_sidecar = recorded_pod("dagster-run-x", "Running", RUNNING)
    sidecar = {**with_sidecar["status"]["containerStatuses"][0], "name": "proxy"}
    with_sidecar["status"]["containerStatuses"].insert(0, sidecar)
    with_sidecar["status"]["containerStatuses"][1]["state"] = terminated(137, "OOMKilled")
    assert pod_state(as_pod(with_sidecar))["OOMKilled"] is True
    assert pod_state(as_pod(with_sidecar), container="proxy")["Running"] is True
