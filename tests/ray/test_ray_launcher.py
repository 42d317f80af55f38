"""Real runs through TieredRayRunLauncher on a real Ray cluster (tests/ray/conftest.py).

One deployment for the module: a Postgres instance (over the Unix socket: the suite runs in a
network namespace) with the Ray launcher, the queued run coordinator, run-granularity pools and
a real ``dagster-daemon`` (queue, run monitoring every second, the OOM promotion sensor and the
heavy scaler on Ray capacity). Runs use the probe assets with the in-process executor.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from dagster import AssetKey, DagsterEventType, DagsterRunStatus
from dagster._core.storage.dagster_run import ACTIVE_RUN_STATUSES

from e2i_pipelines.launcher.promotion import (
    FAILURE_TAG,
    PARENT_RUN_TAG,
    PROMOTED_FROM_TAG,
    RAY_JOB_TAG,
    RAY_NODE_TAG,
)
from e2i_pipelines.scaler.config import CONFIG_ENV
from e2i_pipelines.scaler.evaluation import current_pool_limit
from e2i_pipelines.tiers import TIER_TAG, parse_bytes
from tests.conftest import fresh_database
from tests.launcher.harness import IN_PROCESS, LauncherHarness, probe_config
from tests.ray.conftest import RAY_PROFILES
from tests.support.dagster_processes import REPO_ROOT, DagsterProcess, dagster_daemon

pytestmark = [pytest.mark.ray, pytest.mark.postgres]
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
HEAVY_NODES = 2


class RayDeployment:
    """Harness (instance + workspace) plus the daemon serving it."""

    def __init__(self, harness: LauncherHarness, daemon: DagsterProcess) -> None:
        self.harness, self.daemon = harness, daemon

    def launch(self, tier: str, **probe: float) -> str:
        return self.harness.launch(f"probe_{tier}_job", {**probe_config(tier, **probe), **IN_PROCESS})

    def wait_for(self, run_id: str, statuses: set[DagsterRunStatus], timeout: float = 180):
        return self.harness.wait_for(run_id, statuses, timeout)


@pytest.fixture(scope="module")
def deployment(ray_cluster, tmp_path_factory) -> Iterator[RayDeployment]:
    tmp = tmp_path_factory.mktemp("ray_deployment")
    workspace = tmp / "workspace.yaml"
    workspace.write_text(json.dumps({"load_from": [{"python_module": {
        "module_name": "tests.ray.ray_location", "location_name": "e2i",
        "working_directory": str(REPO_ROOT)}}]}))
    scaler_yaml = tmp / "scaler.yaml"
    scaler_yaml.write_text("max_heavy_runs: 4\ninterval_seconds: 1\n")
    sections = {
        "run_launcher": {
            "module": "e2i_pipelines.launcher.tiered_ray_run_launcher",
            "class": "TieredRayRunLauncher",
            "config": {"ray": {"address": ray_cluster.dashboard_url}, "tiers": RAY_PROFILES},
        },
        "run_coordinator": {"module": "dagster._core.run_coordinator",
                            "class": "QueuedRunCoordinator",
                            "config": {"dequeue_interval_seconds": 1}},
    }
    with fresh_database() as db:
        harness = LauncherHarness(tmp / "home", db, sections=sections, workspace=workspace)
        daemon = dagster_daemon(harness.home, {CONFIG_ENV: str(scaler_yaml)}, workspace=workspace)
        try:
            daemon.wait_until(lambda: current_pool_limit(harness.instance) is not None, 180)
            yield RayDeployment(harness, daemon)
        finally:
            daemon.stop()
            harness.close()


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
    assert info.entrypoint.startswith("python -m e2i_pipelines.launcher.run_worker ")
    assert any(f"placed on Ray node {run.tags[RAY_NODE_TAG]}" in m
               for m in deployment.harness.messages(run_id, DagsterEventType.ENGINE_EVENT))


def test_over_allocating_medium_run_is_oom_killed_and_promoted_to_heavy(deployment, ray_cluster):
    kills_before = ray_cluster.oom_kills("medium")
    parent_id = deployment.launch("medium", allocate_mb=1000, hold_seconds=1)
    parent = deployment.wait_for(parent_id, FINISHED)
    assert parent.status == DagsterRunStatus.FAILURE
    assert ray_cluster.oom_kills("medium") > kills_before  # the kernel really killed it
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
