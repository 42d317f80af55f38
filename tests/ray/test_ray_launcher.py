"""Real runs through TieredRayRunLauncher on a real Ray cluster (tests/ray/conftest.py).

One deployment for the module: a Postgres instance (over the Unix socket: the suite runs in a
network namespace) with the Ray launcher, the queued run coordinator, run-granularity pools and
a real ``dagster-daemon`` (queue, run monitoring every second, the OOM promotion sensor and the
heavy scaler on Ray capacity). Runs use the probe assets with the in-process executor.

Secrets as in production: the instance's Postgres password is ``{env: DAGSTER_PG_PASSWORD}``;
the launcher is told to forward it (``env_vars``) and must not; the worker nodes hold it only as
a 0600 file (``DAGSTER_PG_PASSWORD_FILE``, tests/ray/conftest.py), so a run reaches Postgres only
through its worker reading that file on the node. The launcher and the scaler read the Ray token
from ``auth_token_path``; the daemon's own ``RAY_AUTH_TOKEN_PATH`` names a wrong token, so a
client that fell back to the environment would be refused.

No shared disk (tests/ray/conftest.py): each node has its own ``E2I_DATA_DIR`` and storage is the
moto S3 bucket, so one run reads what another wrote on another node only through S3. The
workspace has a second location, ``tests.ray.ray_model_location`` (the model chain and SHAP).
"""

from __future__ import annotations

import json
import pickle
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import lightgbm as lgb
import mlflow
import mlflow.lightgbm
import numpy as np
import pytest
import yaml
from dagster import AssetKey, DagsterEventType, DagsterRunStatus
from dagster._cli.job import _create_run
from dagster._core.storage.dagster_run import ACTIVE_RUN_STATUSES

from e2i_pipelines.core import storage
from e2i_pipelines.launcher.cgroup_usage import PEAK_MEMORY_TAG
from e2i_pipelines.launcher.promotion import (
    FAILURE_TAG,
    PARENT_RUN_TAG,
    PROMOTED_FROM_TAG,
    RAY_JOB_TAG,
    RAY_NODE_TAG,
)
from e2i_pipelines.launcher.run_worker import run_args
from e2i_pipelines.launcher.worker_exit import parse_exit_record
from e2i_pipelines.scaler.config import CONFIG_ENV
from e2i_pipelines.scaler.evaluation import current_pool_limit
from e2i_pipelines.tiers import TIER_TAG, parse_bytes
from tests.conftest import PG_PASSWORD, fresh_database
from tests.launcher.harness import IN_PROCESS, LauncherHarness, probe_config
from tests.ray.conftest import PG_PASSWORD_ENV, RAY_PROFILES, write_secret_file
from tests.ray.ray_model_location import MODEL_JOB, SHAP_JOB
from tests.support.dagster_processes import (
    REPO_ROOT,
    DagsterProcess,
    dagster_daemon,
    postgres_storage,
)

pytestmark = [pytest.mark.ray, pytest.mark.postgres]
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
HEAVY_NODES = 2
MODEL_LOCATION = "e2i_models"
MODEL_CONFIG = {"ops": {"dataset": {"config": {"n_rows": 3000, "seed": 3}},
                        "feature_store": {"config": {"materialize_online": False}},
                        "outcome_model": {"config": {"n_estimators": 20, "train_rows": 3000}}},
                **IN_PROCESS}
SHAP_CONFIG = {"ops": {"shap_explanations": {"config": {
    "method": "lightgbm", "chunk_rows": 1000, "sample_rows": 200}}}, **IN_PROCESS}


class RayDeployment:
    """Harness (instance + workspace) plus the daemon serving it."""

    def __init__(self, harness: LauncherHarness, daemon: DagsterProcess) -> None:
        self.harness, self.daemon = harness, daemon

    def launch(self, tier: str, **probe: float) -> str:
        return self.harness.launch(f"probe_{tier}_job", {**probe_config(tier, **probe), **IN_PROCESS})

    def wait_for(self, run_id: str, statuses: set[DagsterRunStatus], timeout: float = 180):
        return self.harness.wait_for(run_id, statuses, timeout)

    def launch_in(self, location: str, job_name: str, run_config: dict) -> str:
        """Create and submit a run of ``job_name`` of code location ``location`` (the harness
        launches from location ``e2i`` only)."""
        workspace = self.harness.context.create_request_context()
        code_location = workspace.get_code_location(location)
        repo = next(iter(code_location.get_repositories().values()))
        run = _create_run(instance=self.harness.instance, code_location=code_location,
                          remote_repo=repo, remote_job=repo.get_full_job(job_name),
                          run_config=run_config, tags={}, op_selection=None, run_id=None)
        self.harness.instance.submit_run(run.run_id, workspace)
        return run.run_id


@pytest.fixture(scope="module")
def deployment(ray_cluster, tmp_path_factory) -> Iterator[RayDeployment]:
    tmp = tmp_path_factory.mktemp("ray_deployment")
    workspace = tmp / "workspace.yaml"
    workspace.write_text(json.dumps({"load_from": [{"python_module": {
        "module_name": module, "location_name": name, "working_directory": str(REPO_ROOT)}}
        for module, name in (("tests.ray.ray_location", "e2i"),
                             ("tests.ray.ray_model_location", MODEL_LOCATION))]}))
    scaler_yaml = tmp / "scaler.yaml"
    scaler_yaml.write_text("max_heavy_runs: 4\ninterval_seconds: 1\n")
    wrong_token = write_secret_file(tmp, "wrong_token", "0" * 64)
    sections = {
        "run_launcher": {
            "module": "e2i_pipelines.launcher.tiered_ray_run_launcher",
            "class": "TieredRayRunLauncher",
            "config": {"ray": {"address": ray_cluster.dashboard_url,
                               "env_vars": [PG_PASSWORD_ENV, "E2I_PG_HOST"]},
                       "auth_token_path": str(ray_cluster.token_path), "tiers": RAY_PROFILES},
        },
        "run_coordinator": {"module": "dagster._core.run_coordinator",
                            "class": "QueuedRunCoordinator",
                            "config": {"dequeue_interval_seconds": 1}},
    }
    with fresh_database() as db, pytest.MonkeyPatch.context() as env:
        env.setenv(PG_PASSWORD_ENV, PG_PASSWORD)  # this process and the daemon, not the nodes
        storage = postgres_storage(db)
        storage["postgres"]["postgres_db"]["password"] = {"env": PG_PASSWORD_ENV}
        harness = LauncherHarness(tmp / "home", db, sections={**sections, "storage": storage},
                                  workspace=workspace)
        daemon = dagster_daemon(harness.home, {CONFIG_ENV: str(scaler_yaml),
                                               "RAY_AUTH_TOKEN_PATH": str(wrong_token)},
                                workspace=workspace)
        try:
            daemon.wait_until(lambda: current_pool_limit(harness.instance) is not None, 180)
            yield RayDeployment(harness, daemon)
        finally:
            daemon.stop()
            harness.close()


def assert_no_password(info) -> None:
    """The job as the cluster stores it (Jobs API) holds no Postgres password: its runtime_env
    forwards plain variables only, and the instance ref in its entrypoint names the variable
    (``{env: DAGSTER_PG_PASSWORD}``), never the value."""
    assert set(info.runtime_env) == {"env_vars"}, info.runtime_env
    env_vars = info.runtime_env["env_vars"]
    assert PG_PASSWORD_ENV not in env_vars and env_vars.get("E2I_PG_HOST"), env_vars
    assert PG_PASSWORD not in env_vars.values()
    words = shlex.split(info.entrypoint)  # python -m <run_worker> <dagster> api execute_run ARGS
    args = run_args(words[words.index("api") - 1:])
    storage = yaml.safe_load(args.instance_ref.storage_data.config_yaml)
    assert storage["postgres_db"]["password"] == {"env": PG_PASSWORD_ENV}, storage


def assert_placed_on_its_tier(deployment: RayDeployment, run_id: str, tier: str) -> None:
    """The run was sized to its tier, submitted as a job asking for the tier resource and placed
    on a node of that tier, and it says so (tags, job metadata, an engine event). Run monitoring
    (every second here) records the node once the job runs, the worker at the latest on exit."""
    deadline = time.monotonic() + 10
    while RAY_NODE_TAG not in (run := deployment.harness.run(run_id)).tags and time.monotonic() < deadline:
        time.sleep(0.25)
    launcher = deployment.harness.instance.run_launcher
    profile = RAY_PROFILES[tier]
    assert run.tags[TIER_TAG] == tier and run.tags["e2i/tier_source"] == "execution plan"
    assert run.tags["e2i/limits"] == (
        f"cpus={profile['cpus']} memory={profile['memory']} resource e2i-{tier}=1 (ray job)")
    assert run.tags[RAY_NODE_TAG].startswith(tier), run.tags  # light / heavy-1 | heavy-2
    assert launcher.job_request(run) == {
        "entrypoint_num_cpus": profile["cpus"],
        "entrypoint_memory": parse_bytes(profile["memory"]),
        "entrypoint_resources": {f"e2i-{tier}": 1},
    }
    info = launcher.client.get_job_info(run.tags[RAY_JOB_TAG])
    assert info.metadata["e2i/tier"] == tier
    memory = parse_bytes(profile["memory"])
    assert info.entrypoint.startswith(f"python -m e2i_pipelines.launcher.ray_worker --memory {memory} ")
    assert_no_password(info)
    assert any(f"placed on Ray node {run.tags[RAY_NODE_TAG]}" in m
               for m in deployment.harness.messages(run_id, DagsterEventType.ENGINE_EVENT))


def test_over_allocating_medium_run_is_oom_killed_and_promoted_to_heavy(deployment):
    parent_id = deployment.launch("medium", allocate_mb=1000, hold_seconds=1)
    parent = deployment.wait_for(parent_id, FINISHED)
    assert parent.status == DagsterRunStatus.FAILURE
    # The kernel really killed it, in the run's own cgroup below the node's (ray_worker), capped
    # at the tier: cgroup v1 counts the kill there only, not in the node's cgroup. The job's log
    # holds that cgroup's counter and limit; the run's peak reached the limit.
    launcher = deployment.harness.instance.run_launcher
    record = parse_exit_record(launcher.client.get_job_logs(parent.tags[RAY_JOB_TAG]))
    limit = parse_bytes(RAY_PROFILES["medium"]["memory"])
    assert record["oom_kills"] >= 1 and record["memory_limit_bytes"] == limit, record
    assert Path(record["cgroup"]).parent.name.endswith("-medium"), record
    assert int(parent.tags[PEAK_MEMORY_TAG]) >= 0.95 * limit, parent.tags
    assert parent.tags[FAILURE_TAG] == "oom", parent.tags
    expected = (f"Ray job {parent.tags[RAY_JOB_TAG]} was OOM-killed at tier medium "
                "(memory limit 768m) while running step probe_medium")
    assert expected in parent.tags["e2i/failure_reason"]
    assert any(expected in m for m in deployment.harness.messages(parent_id))

    deadline = time.monotonic() + 120
    children = []
    while not children and time.monotonic() < deadline:
        children = [r for r in deployment.harness.instance.get_runs()
                    if r.tags.get(PARENT_RUN_TAG) == parent_id]
        time.sleep(0.5)
    assert len(children) == 1, deployment.daemon.log_tail()
    child = deployment.wait_for(children[0].run_id, FINISHED)
    assert child.status == DagsterRunStatus.SUCCESS, deployment.harness.log_text(child.run_id)
    assert child.tags[TIER_TAG] == "heavy" and child.tags[PROMOTED_FROM_TAG] == "medium"
    assert child.tags[RAY_NODE_TAG].startswith("heavy-")


def test_heavy_burst_is_capped_by_the_scaler_from_ray_capacity(deployment: RayDeployment):
    instance = deployment.harness.instance
    # One more heavy run than there are heavy nodes: the scaler must hold it back.
    run_ids = [deployment.launch("heavy", allocate_mb=8, hold_seconds=3)
               for _ in range(HEAVY_NODES + 1)]
    max_in_progress, limits = 0, set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        statuses = [deployment.harness.run(i).status for i in run_ids]
        max_in_progress = max(max_in_progress, sum(s in ACTIVE_RUN_STATUSES for s in statuses))
        limits.add(current_pool_limit(instance))
        if all(s in FINISHED for s in statuses):
            break
        time.sleep(0.25)
    statuses = [deployment.harness.run(i).status for i in run_ids]
    assert all(s == DagsterRunStatus.SUCCESS for s in statuses), statuses
    for run_id in run_ids:  # each landed on a heavy node
        assert_placed_on_its_tier(deployment, run_id, "heavy")
    materialization = instance.get_latest_materialization_event(AssetKey("probe_heavy"))
    threads = materialization.asset_materialization.metadata["omp_num_threads"].value
    assert threads == str(RAY_PROFILES["heavy"]["cpus"])  # the tier's CPU budget
    assert max_in_progress == HEAVY_NODES, (max_in_progress, limits)
    assert HEAVY_NODES in limits and max(x for x in limits if x is not None) == HEAVY_NODES
    state = next(s for s in instance.all_instigator_state() if s.name == "e2i_heavy_scaler")
    cursors = [json.loads(t.cursor) for t in instance.get_ticks(
        state.instigator_origin_id, state.selector_id, limit=200) if t.cursor]
    capped = [c for c in cursors if c["decision"]["bound_by"] == "capacity"]
    assert capped, "no scaler decision was bound by the Ray capacity"
    assert capped[0]["capacity"]["source"] == "ray"
    assert capped[0]["capacity"]["tier_units"]["heavy"] == HEAVY_NODES
    assert capped[0]["decision"]["capacity_slots"] == HEAVY_NODES


def test_terminate_stops_the_ray_job(deployment: RayDeployment):
    run_id = deployment.launch("light", hold_seconds=300)
    deployment.harness.wait_for_step_start(run_id, timeout=120)
    assert_placed_on_its_tier(deployment, run_id, "light")  # and not on the idle heavy nodes
    launcher = deployment.harness.instance.run_launcher
    submission_id = deployment.harness.run(run_id).tags[RAY_JOB_TAG]
    assert launcher.terminate(run_id) is True
    run = deployment.wait_for(run_id, FINISHED, timeout=60)
    assert run.status == DagsterRunStatus.CANCELED, deployment.harness.log_text(run_id)
    assert str(launcher.client.get_job_status(submission_id)) == "STOPPED"


def test_ray_job_carries_no_password_and_its_worker_reads_it_on_the_node(deployment):
    """The launcher was told to forward DAGSTER_PG_PASSWORD and did not (an engine event says
    so); the job the cluster stores holds no password; the run still reached Postgres (its
    events are there and it succeeded) through the password file on its node."""
    run_id = deployment.launch("light", allocate_mb=8)
    run = deployment.wait_for(run_id, FINISHED)
    assert run.status == DagsterRunStatus.SUCCESS, deployment.harness.log_text(run_id)
    launcher = deployment.harness.instance.run_launcher
    assert_no_password(launcher.client.get_job_info(run.tags[RAY_JOB_TAG]))
    assert any(f"not forwarded to the Ray job (secrets; the node reads NAME_FILE): {PG_PASSWORD_ENV}"
               in m for m in deployment.harness.messages(run_id, DagsterEventType.ENGINE_EVENT))
    assert deployment.harness.instance.all_logs(run_id, of_type=DagsterEventType.STEP_SUCCESS)


def _paths_named(root: Path, name: str) -> list[Path]:
    return [p for p in root.rglob("*") if name in p.relative_to(root).parts]


def _io_value(s3, asset: str):
    """The IO manager's pickle of ``asset`` in the bucket (written by our own runs)."""
    return pickle.loads(storage.to_path(f"{s3.url}/io/{asset}").read_bytes())  # noqa: S301


def test_heavy_run_reads_the_model_a_medium_run_wrote_through_s3(deployment, ray_cluster,
                                                                  ray_storage, ray_mlflow):
    """The model chain runs on the medium node, SHAP then on a heavy node: the heavy run loads
    the medium run's ``outcome_model`` from the bucket (its own data dir never holds it), and its
    attributions explain that very model (base + sum of SHAP values = its raw predictions)."""
    model_run = deployment.launch_in(MODEL_LOCATION, MODEL_JOB, MODEL_CONFIG)
    done = deployment.wait_for(model_run, FINISHED, timeout=300)
    assert done.status == DagsterRunStatus.SUCCESS, deployment.harness.log_text(model_run)
    assert done.tags[RAY_NODE_TAG] == "medium", done.tags
    shap_run = deployment.launch_in(MODEL_LOCATION, SHAP_JOB, SHAP_CONFIG)
    done = deployment.wait_for(shap_run, FINISHED, timeout=300)
    assert done.status == DagsterRunStatus.SUCCESS, deployment.harness.log_text(shap_run)
    heavy = done.tags[RAY_NODE_TAG]
    assert heavy.startswith("heavy-"), done.tags

    keys = set(ray_storage.keys("e2i/"))
    model_folder = f"e2i/outcome_model/{model_run}/"
    assert {model_folder + "model.txt", model_folder + storage.MANIFEST,
            "e2i/io/outcome_model", "e2i/io/dataset"} <= keys, sorted(keys)
    assert any(k.startswith(f"e2i/shap_explanations/{shap_run}/") for k in keys), sorted(keys)
    medium_dir, heavy_dir = ray_cluster.data_dir("medium"), ray_cluster.data_dir(heavy)
    # Each run worked in its own node's folder (Feast's local mirror)...
    assert (medium_dir / "mirror" / "feature_store" / model_run).is_dir()
    # ... which holds no asset output folder: those live in the bucket only. The heavy node
    # never had the model file (MLflow keeps its own copy on the medium node only).
    for node_dir in (medium_dir, heavy_dir):
        assert _paths_named(node_dir, "outcome_model") == [], node_dir
        assert _paths_named(node_dir, "dataset") == [], node_dir
    assert list(heavy_dir.rglob("model.txt")) == []

    model, dataset, shap = (_io_value(ray_storage, a)
                            for a in ("outcome_model", "dataset", "shap_explanations"))
    assert model.model_path == f"{ray_storage.url}/outcome_model/{model_run}/model.txt"
    phi = storage.read_parquet(shap["attributions_path"])
    frame = dataset.read()
    assert len(phi) == len(frame) == 3000
    np.testing.assert_array_equal(phi[dataset.id_column].to_numpy(),
                                  frame[dataset.id_column].to_numpy())
    booster = lgb.Booster(model_str=storage.read_text(model.model_path))
    raw = booster.predict(model.model_frame(frame), raw_score=True)
    total = shap["base_value"] + phi[model.feature_names].to_numpy().sum(axis=1)
    np.testing.assert_allclose(total, raw, rtol=0, atol=1e-6)

    # One MLflow for both nodes: no node keeps a store; the heavy node's SHAP run names the model
    # run the medium node logged, and that logged model loads here (artifacts from the bucket).
    for node_dir in (medium_dir, heavy_dir):
        assert list(node_dir.rglob("mlflow.db")) == [] and list(node_dir.rglob("mlartifacts")) == []
    client = mlflow.MlflowClient(ray_mlflow)
    assert client.get_run(shap["mlflow_run_id"]).data.params["model_mlflow_run_id"] == \
        model.mlflow_run_id
    assert client.get_run(model.mlflow_run_id).data.tags["dagster_run_id"] == model_run
    assert any(k.startswith("mlflow/") for k in ray_storage.keys("mlflow/"))
    mlflow.set_tracking_uri(ray_mlflow)
    logged = mlflow.lightgbm.load_model(f"runs:/{model.mlflow_run_id}/model")
    np.testing.assert_array_equal(logged.predict(model.model_frame(frame), raw_score=True), raw)
