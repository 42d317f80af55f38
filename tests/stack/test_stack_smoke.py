"""Smoke test of the production compose stack, for real: docker-compose up, health, runs through
the API in tier-sized containers, a daemon restart mid-run, backup -> wipe -> restore.

The tests run on the session's one stack (tests/support/shared_stack.py: with the monitoring
profile and the chaos override) in the order given there; the backup test wipes it, last.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from e2i_pipelines.tiers import parse_bytes
from tests.stack.compose_stack import DATA_DIR, ComposeStack

pytestmark = [pytest.mark.stack, pytest.mark.docker, pytest.mark.timeout(1500)]

RUN_TIMEOUT = 420
APP_SERVICES = {"postgres", "mlflow", "code-server", "webserver", "daemon", "api", "engine-proxy",
                "webserver-viewer", "caddy"}
"""docker/docker-compose.yml's services: what scripts/stack_health.sh and restore.sh manage."""
MONITORING_SERVICES = {"exporter", "prometheus"}
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def api(stack: ComposeStack) -> httpx.Client:
    return stack.api_client()


def submit(stack: ComposeStack, job: str, asset: str, **config: Any) -> str:
    with api(stack) as client:
        response = client.post("/v1/runs", json={"job": job, "params": {asset: config}})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


def run_status(stack: ComposeStack, run_id: str) -> dict[str, Any]:
    with api(stack) as client:
        response = client.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(stack: ComposeStack, run_id: str, statuses: set[str], timeout: float = RUN_TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = run_status(stack, run_id)
        if run["status"] in statuses:
            return run
        time.sleep(2)
    raise AssertionError(f"run {run_id} not in {statuses} after {timeout}s: {run}")


def run_container(stack: ComposeStack, docker_client, run_id: str):
    found = [c for c in stack.run_containers(docker_client) if c.labels.get("dagster/run_id") == run_id]
    assert len(found) == 1, f"run {run_id}: expected one run container, found {len(found)}"
    return found[0]


def assert_sized(stack: ComposeStack, container, tier: str) -> None:
    """The run container got ``tier``'s limits, the hardening, the runs network and the shared data
    volume."""
    profile = stack.tiers[tier]
    attrs = container.attrs
    host = attrs["HostConfig"]
    assert host["NanoCpus"] == int(profile["cpus"] * 1e9)
    assert host["Memory"] == parse_bytes(profile["memory"])
    assert host["MemorySwap"] == parse_bytes(profile["memswap"])
    assert host["PidsLimit"] == profile["pids"]
    assert host["ShmSize"] == parse_bytes(profile["shm"])
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    assert env["OMP_NUM_THREADS"] == str(int(profile["cpus"]))
    assert env["E2I_TIER"] == tier
    assert list(attrs["NetworkSettings"]["Networks"]) == [f"{stack.project}_runs"]
    assert host["CapDrop"] == ["ALL"] and host["ReadonlyRootfs"] is True, host
    assert host["SecurityOpt"] == ["no-new-privileges"] and not host["Privileged"], host
    assert attrs["Config"]["User"] == "10001:10001"
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts[DATA_DIR]["Name"] == f"{stack.project}_data"
    # The instance password only as the read-only run-secrets volume, never in the container's metadata.
    assert mounts["/run/secrets"]["Name"] == f"{stack.project}_run_secrets" and mounts["/run/secrets"]["RW"] is False
    assert env["DAGSTER_PG_PASSWORD_FILE"] == "/run/secrets/dagster_pg_password" and "DAGSTER_PG_PASSWORD" not in env
    assert stack.secret("dagster_pg_password").strip() not in json.dumps(attrs)


def test_stack_comes_up_healthy(stack: ComposeStack) -> None:
    result = stack.script("stack_health.sh")
    print(result.stdout)
    assert "all services healthy" in result.stdout
    assert set(stack.services()) == APP_SERVICES | MONITORING_SERVICES
    with api(stack) as client:
        ready = client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert stack.cold_start_seconds > 0


def test_health_command_fails_when_a_service_is_down(stack: ComposeStack, docker_client) -> None:
    stack.compose("pause", "mlflow")  # paused, not stopped: no restart cost afterwards
    try:
        result = stack.script("stack_health.sh", check=False)
        assert result.returncode == 1
        assert any(line.split()[:2] == ["mlflow", "paused"] for line in result.stdout.splitlines())
    finally:
        stack.compose("unpause", "mlflow")
    stack.wait_healthy(docker_client, timeout=300)


def test_runs_through_the_api_get_sized_containers_and_survive_a_daemon_restart(
    stack: ComposeStack, docker_client
) -> None:
    """Light and heavy runs via POST /v1/runs, each in its own tier-sized container; the daemon is
    stopped while the light run executes, a run submitted meanwhile waits in the queue, and after
    the restart every run succeeds (run in parallel to keep the smoke test short)."""
    light = submit(stack, "probe_light_job", "probe_light", allocate_mb=64, hold_seconds=30)
    heavy = submit(stack, "probe_heavy_job", "probe_heavy", allocate_mb=128, hold_seconds=1)
    wait_for(stack, light, {"STARTED"})
    daemon = stack.container_id("daemon")
    started_before = docker_client.api.inspect_container(daemon)["State"]["StartedAt"]
    stack.compose("stop", "daemon")
    assert run_status(stack, light)["status"] == "STARTED", "the light run ended before the daemon stopped"
    queued = submit(stack, "probe_light_job", "probe_light", allocate_mb=32, hold_seconds=1)
    assert run_status(stack, queued)["status"] == "QUEUED"
    stack.compose("start", "daemon")
    assert docker_client.api.inspect_container(daemon)["State"]["StartedAt"] != started_before

    containers = {}
    for run_id, tier in ((light, "light"), (heavy, "heavy"), (queued, "light")):
        run = wait_for(stack, run_id, FINISHED)
        assert run["status"] == "SUCCESS", run
        assert run["tier"] == tier
        containers[run_id] = run_container(stack, docker_client, run_id)
        assert_sized(stack, containers[run_id], tier)
    assert len({c.id for c in containers.values()}) == 3, "runs shared a container"
    stack.wait_healthy(docker_client, timeout=300)


def test_backup_wipe_restore_brings_runs_back(stack: ComposeStack, docker_client, tmp_path) -> None:
    with api(stack) as client:
        before = client.get("/v1/runs", params={"limit": 50}).json()["runs"]
    succeeded = [r["run_id"] for r in before if r["status"] == "SUCCESS"]
    assert succeeded, "earlier tests left no successful run to back up"
    backup_dir = tmp_path / "backup"
    print(stack.script("backup.sh", str(backup_dir)).stdout)
    assert {p.name for p in backup_dir.iterdir()} >= {
        "dagster.dump", "mlflow.dump", f"{stack.project}_data.tar.gz",
        f"{stack.project}_mlflow_artifacts.tar.gz", "MANIFEST", "SHA256SUMS"}

    stack.down(docker_client)  # wipe: containers, networks and every volume
    assert not docker_client.volumes.list(filters={"name": f"{stack.project}_"})

    start = time.monotonic()
    print(stack.script("restore.sh", str(backup_dir), timeout=900).stdout)
    stack.wait_healthy(docker_client, timeout=900, services=APP_SERVICES)  # restore.sh: no profiles
    print(f"restore + start until healthy: {time.monotonic() - start:.1f}s")
    for run_id in succeeded:
        assert run_status(stack, run_id)["status"] == "SUCCESS"
    logs = docker_client.containers.run(
        stack.image, ["find", f"{DATA_DIR}/.dagster/compute_logs", "-type", "f"], remove=True,
        network_mode="none", volumes={f"{stack.project}_data": {"bind": DATA_DIR, "mode": "ro"}})
    assert succeeded[0] in logs.decode(), "compute logs of the runs did not come back with the data volume"
