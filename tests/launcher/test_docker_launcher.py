"""Real runs through TieredDockerRunLauncher: real Docker engine, real Postgres, e2i:local image.

Tier profiles are the small test ones in tests/launcher/harness.py. Most runs use the in-process
executor (one import of the code location per container instead of two: faster on 2 cores). Run monitoring is driven
in-process (one daemon iteration at a time) except for the promotion test, which runs a real
``dagster-daemon`` so the OOM promotion sensor ticks as in production.
"""

from __future__ import annotations

import json
import time

import pytest
from dagster import AssetKey, DagsterEventType
from dagster._core.storage.dagster_run import DagsterRunStatus

from e2i_pipelines.launcher.promotion import (
    FAILURE_TAG,
    PARENT_RUN_TAG,
    PROMOTE_TAG,
    PROMOTED_FROM_TAG,
    WORKER_EXIT_TAG,
)
from e2i_pipelines.launcher.worker_exit import WORKER_MODULE
from e2i_pipelines.tiers import TIER_TAG, parse_bytes
from tests.launcher.harness import (
    IN_PROCESS,
    TEST_PROFILES,
    LauncherHarness,
    probe_config,
    wait_container_exit,
)
from tests.support.dagster_processes import dagster_daemon

pytestmark = [pytest.mark.docker, pytest.mark.postgres]
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
NO_PROMOTION = {PROMOTE_TAG: "false"}


def test_each_tier_gets_its_limits_and_thread_budget(harness: LauncherHarness, docker_client):
    run_ids = {tier: harness.launch(f"probe_{tier}_job", {**probe_config(tier, allocate_mb=8), **IN_PROCESS})
               for tier in TEST_PROFILES}
    for tier, run_id in run_ids.items():
        run = harness.wait_for(run_id, FINISHED)
        assert run.status == DagsterRunStatus.SUCCESS, harness.log_text(run_id)
        profile = TEST_PROFILES[tier]
        attrs = docker_client.containers.get(harness.container_id(run_id)).attrs
        host = attrs["HostConfig"]
        assert host["Memory"] == parse_bytes(profile["memory"])
        assert host["MemorySwap"] == parse_bytes(profile["memswap"])
        assert host["NanoCpus"] == int(profile["cpus"] * 1e9)
        assert host["PidsLimit"] == profile["pids"]
        assert host["ShmSize"] == parse_bytes(profile["shm"])
        assert attrs["HostConfig"]["NetworkMode"] == "host"
        assert attrs["Config"]["Cmd"][:6] == ["python", "-m", WORKER_MODULE, "dagster", "api", "execute_run"]
        env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
        threads = str(profile["cpus"])
        assert {env[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                 "NUMEXPR_NUM_THREADS", "E2I_N_JOBS")} == {threads}
        assert env["E2I_TIER"] == tier
        assert run.tags[TIER_TAG] == tier and run.tags["e2i/tier_source"] == "execution plan"
        assert run.tags["e2i/limits"].startswith(f"cpus={profile['cpus']} memory={profile['memory']}")
        engine_messages = harness.messages(run_id, DagsterEventType.ENGINE_EVENT)
        assert any(f"e2i tier {tier} (from execution plan): cpus=" in m for m in engine_messages)
        # The step itself saw the budget (the probe reports OMP_NUM_THREADS in its metadata).
        mat = harness.instance.get_latest_materialization_event(AssetKey(f"probe_{tier}"))
        assert mat.asset_materialization.metadata["omp_num_threads"].value == threads


def test_run_tag_overrides_the_plan_tier(harness: LauncherHarness, docker_client):
    run_id = harness.launch("probe_light_job", {**probe_config("light"), **IN_PROCESS},
                            tags={TIER_TAG: "medium"})
    run = harness.wait_for(run_id, FINISHED)
    assert run.status == DagsterRunStatus.SUCCESS, harness.log_text(run_id)
    host = docker_client.containers.get(harness.container_id(run_id)).attrs["HostConfig"]
    assert host["Memory"] == parse_bytes(TEST_PROFILES["medium"]["memory"])
    assert run.tags["e2i/tier_source"] == "run tag"


def test_unknown_run_tier_fails_the_launch_clearly(harness: LauncherHarness):
    with pytest.raises(Exception, match="unknown e2i tier 'gpu'"):
        harness.launch("probe_light_job", probe_config("light"), tags={TIER_TAG: "gpu"})
    [run] = harness.instance.get_runs()
    assert run.status == DagsterRunStatus.FAILURE
    assert "docker/container_id" not in run.tags  # no container was created
    assert any("unknown e2i tier 'gpu'" in m for m in harness.messages(run.run_id))


def test_oom_kill_of_the_run_worker_is_reported_by_its_wrapper(harness: LauncherHarness, docker_client):
    """In-process executor: the kernel kills the run worker; the wrapper around it (the
    container's command) fails the run with the diagnosis before run monitoring looks."""
    run_id = harness.launch(
        "probe_light_job", {**probe_config("light", allocate_mb=1200, hold_seconds=30), **IN_PROCESS},
        tags=NO_PROMOTION,
    )
    harness.wait_for(run_id, {DagsterRunStatus.STARTED} | FINISHED)
    state = wait_container_exit(docker_client, harness.container_id(run_id))
    assert state["OOMKilled"] is True and state["ExitCode"] == 137, state
    run = harness.wait_for(run_id, FINISHED, timeout=10)  # no run monitoring pass needed
    assert run.status == DagsterRunStatus.FAILURE
    expected = "was OOM-killed at tier light (memory limit 768m) while running step probe_light"
    [failure] = harness.messages(run_id, DagsterEventType.RUN_FAILURE)
    assert expected in failure
    assert run.tags[FAILURE_TAG] == "oom" and expected in run.tags["e2i/failure_reason"]
    assert any(expected in m for m in harness.messages(run_id, DagsterEventType.ENGINE_EVENT))


def test_removed_container_fails_the_run_clearly(harness: LauncherHarness, docker_client):
    run_id = harness.launch("probe_light_job", {**probe_config("light", hold_seconds=300), **IN_PROCESS})
    harness.wait_for_step_start(run_id)
    docker_client.containers.get(harness.container_id(run_id)).remove(force=True)
    harness.monitor_once()
    run = harness.wait_for(run_id, FINISHED, timeout=10)
    assert run.status == DagsterRunStatus.FAILURE
    [failure] = harness.messages(run_id, DagsterEventType.RUN_FAILURE)
    assert "disappeared" in failure and "while running step probe_light at tier light" in failure
    assert run.tags[FAILURE_TAG] == "container_missing"


def test_terminate_stops_the_container(harness: LauncherHarness, docker_client):
    run_id = harness.launch("probe_light_job", {**probe_config("light", hold_seconds=300), **IN_PROCESS})
    harness.wait_for_step_start(run_id)
    started = time.monotonic()
    assert harness.instance.run_launcher.terminate(run_id) is True
    container = docker_client.containers.get(harness.container_id(run_id))
    assert container.status in ("exited", "dead")
    run = harness.wait_for(run_id, FINISHED, timeout=30)
    assert run.status == DagsterRunStatus.CANCELED, harness.log_text(run_id)
    assert time.monotonic() - started < 40


def test_oom_killed_run_is_promoted_once_and_succeeds(harness: LauncherHarness, docker_client):
    """Multiprocess executor: only the step process is OOM-killed and the run fails by itself;
    the run worker's wrapper records the OOM from its container's memory cgroup and the promotion
    sensor (in a real dagster-daemon) re-launches at medium."""
    daemon = dagster_daemon(harness.home)  # started
    try:
        _wait_sensor_ticked(harness, daemon)
        parent_id = harness.launch("probe_light_job", probe_config("light", allocate_mb=500))
        parent = harness.wait_for(parent_id, FINISHED)
        assert parent.status == DagsterRunStatus.FAILURE
        assert wait_container_exit(docker_client, harness.container_id(parent_id))["OOMKilled"]
        child = _wait_child(harness, parent_id, daemon)
        child = harness.wait_for(child.run_id, FINISHED)
    finally:
        daemon.stop()
    assert child.status == DagsterRunStatus.SUCCESS, harness.log_text(child.run_id)
    parent = harness.run(parent_id)
    assert parent.tags[FAILURE_TAG] == "oom"
    assert "OOM-killed at tier light (memory limit 768m)" in parent.tags["e2i/failure_reason"]
    recorded = json.loads(parent.tags[WORKER_EXIT_TAG])  # by the worker, not by inspection
    assert recorded["oom_kills"] >= 1 and recorded["signal"] is None, recorded
    assert child.tags[TIER_TAG] == "medium" and child.tags[PROMOTED_FROM_TAG] == "light"
    host = docker_client.containers.get(harness.container_id(child.run_id)).attrs["HostConfig"]
    assert host["Memory"] == parse_bytes(TEST_PROFILES["medium"]["memory"])
    promoted = [r for r in harness.instance.get_runs() if r.tags.get(PARENT_RUN_TAG) == parent_id]
    assert len(promoted) == 1


def _wait_sensor_ticked(harness: LauncherHarness, daemon, timeout: float = 120) -> None:
    """Until the promotion sensor has evaluated once (it then watches failures from now on)."""
    from dagster._core.scheduler.instigation import InstigatorType

    def ticked() -> bool:
        states = harness.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        return any(
            harness.instance.get_ticks(s.instigator_origin_id, s.selector_id, limit=1)
            for s in states if s.instigator_name == "e2i_oom_promotion_sensor"
        )

    daemon.wait_until(ticked, timeout)


def _wait_child(harness: LauncherHarness, parent_id: str, daemon, timeout: float = 120):
    found = []

    def child_exists() -> bool:
        found[:] = [r for r in harness.instance.get_runs() if r.tags.get(PARENT_RUN_TAG) == parent_id]
        return bool(found)

    daemon.wait_until(child_exists, timeout)
    return found[0]
