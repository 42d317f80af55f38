"""Chaos suite on the compose stack: one fault per test, injected while a probe run writes.

Every test asserts (tests/chaos/chaos_lib.inject_fault): the run ends with a readable reason
within the run-monitoring interval plus a margin and no run is left STARTED; no partial output is
visible; the API answers 503, never 500, while a dependency is down; the next run succeeds. The
first test is the OOM path end to end: a medium run whose step process is OOM-killed is recorded
by its own run worker (the code server that evaluates the promotion sensor has no Docker socket)
and re-launched at heavy. The suite prints the fault table (its last run: tests/README.md).
"""

from __future__ import annotations

import json
import time

import pytest

from e2i_pipelines.launcher.promotion import FAILURE_TAG, PARENT_RUN_TAG, WORKER_EXIT_TAG
from e2i_pipelines.scaler.capacity import HostCapacity
from e2i_pipelines.scaler.profile import HeavyProfile
from e2i_pipelines.tiers import DEFAULT_PROFILES, Tier, parse_bytes
from tests.chaos.chaos_lib import (
    FAULT_TABLE,
    FaultCase,
    FaultRow,
    graphql,
    in_data_volume,
    inject_fault,
    run_container,
    started_runs,
    submit,
    wait_earlier_runs_exited,
    wait_run,
)
from tests.stack.compose_stack import DATA_DIR, ComposeStack

pytestmark = [pytest.mark.stack, pytest.mark.docker, pytest.mark.chaos, pytest.mark.timeout(900)]
FILLER = f"{DATA_DIR}/.chaos-filler"


def test_oom_in_the_step_process_is_recorded_by_the_worker_and_promoted(
    chaos_stack: ComposeStack, docker_client
) -> None:
    code_server = docker_client.containers.get(chaos_stack.container_id("code-server"))
    assert "/var/run/docker.sock" not in {m["Destination"] for m in code_server.attrs["Mounts"]}
    start = time.monotonic()
    parent_id = submit(chaos_stack, "medium", in_process=False, allocate_mb=900, hold_seconds=2)
    parent = wait_run(chaos_stack, parent_id)
    assert parent["status"] == "FAILURE", parent
    deadline = time.monotonic() + 60  # the wrapper records after the run worker has exited
    while WORKER_EXIT_TAG not in parent["tags"] and time.monotonic() < deadline:
        time.sleep(1)
        parent = wait_run(chaos_stack, parent_id)
    logs = run_container(chaos_stack, docker_client, parent_id).logs(tail=15).decode(errors="replace")
    assert parent["tags"].get(FAILURE_TAG) == "oom", f"{parent}\n{logs}"
    assert "OOM-killed at tier medium (memory limit 1280m) while running step probe_medium" \
        in parent["failure"]["message"]
    exit_record = json.loads(parent["tags"][WORKER_EXIT_TAG])
    assert exit_record["oom_kills"] >= 1 and exit_record["signal"] is None, exit_record  # a step process was killed
    deadline = time.monotonic() + 120
    while not parent.get("promoted_to") and time.monotonic() < deadline:
        time.sleep(2)
        parent = wait_run(chaos_stack, parent_id)
    assert parent.get("promoted_to"), "the OOM-killed run was not promoted"
    promoted = time.monotonic()
    child = wait_run(chaos_stack, parent["promoted_to"])
    assert child["status"] == "SUCCESS", child
    assert child["tier"] == "heavy" and child["tags"][PARENT_RUN_TAG] == parent_id
    assert started_runs(chaos_stack) == []
    FAULT_TABLE.append(FaultRow("medium run over its memory (step process OOM-killed)",
                                "failure oom -> promoted to heavy: success",
                                promoted - start, time.monotonic() - promoted))


SCALER_TICKS = """
query {
  sensorOrError(sensorSelector: {repositoryLocationName: "e2i", repositoryName: "__repository__",
                                 sensorName: "e2i_heavy_scaler"}) {
    __typename
    ... on Sensor { sensorState { ticks(limit: 50) { timestamp status cursor } } }
  }
}
"""


def scaler_dry_run(stack: ComposeStack, docker_client, service: str = "code-server") -> dict:
    """The scaler's evaluation now (``python -m e2i_pipelines.scaler dry-run --json``) in the
    ``service`` container: the stack's instance, its launcher, and the Docker engine through the
    engine proxy's read-only view (no service but the proxy holds the socket)."""
    container = docker_client.containers.get(stack.container_id(service))
    # exec runs outside the image's entrypoint: the secrets wrapper exports the instance password.
    code, (out, err) = container.exec_run(["python", "-m", "e2i_pipelines.core.secrets", "python", "-m",
                                           "e2i_pipelines.scaler", "dry-run", "--json"], demux=True)
    assert code == 0, (err or b"").decode(errors="replace")[-3000:]
    return json.loads(out)


STACK_SERVICES = ("postgres", "code-server", "webserver", "daemon", "api", "mlflow", "engine-proxy")
WRITE_FROM_CODE_SERVER = """
import docker
try:
    docker.from_env(timeout=10).containers.create("e2i:local", ["true"], network_mode="none")
    print("created")
except docker.errors.APIError as exc:
    print(exc.status_code, exc.explanation)
"""


def assert_services_measured_by_use(stack: ComposeStack, docker_client, capacity: dict) -> None:
    """``capacity`` (a HostCapacity record) comes from the engine and counts every stack service
    with what it uses, below the sum of their limits (which exceeds a 2-core host)."""
    engine = docker_client.info()
    assert capacity["source"] == "docker" and not capacity["note"], capacity
    assert (capacity["total_cpus"], capacity["total_memory_bytes"]) == (engine["NCPU"], engine["MemTotal"])
    measured = {h["name"] for h in capacity["holdings"] if h["kind"] == "service" and h["basis"] == "measured"}
    for service in STACK_SERVICES:
        assert any(f"_{service}_" in name for name in measured), (service, capacity["holdings"])
    limits = [docker_client.containers.get(stack.container_id(s)).attrs["HostConfig"] for s in STACK_SERVICES]
    limit_cpus, limit_memory = sum(h["NanoCpus"] for h in limits) / 1e9, sum(h["Memory"] for h in limits)
    assert limit_cpus > engine["NCPU"] or limit_memory > engine["MemTotal"] / 3
    assert 0 < capacity["service_cpus"] < limit_cpus and 0 < capacity["service_memory_bytes"] < limit_memory / 2, (
        capacity, limit_cpus, limit_memory)


def test_one_heavy_run_sized_to_the_host_is_admitted_on_the_real_engine(
    chaos_stack: ComposeStack, docker_client
) -> None:
    """A heavy run as large as the host's CPUs (2 on the CI host) fits beside the stack's own
    services: the scaler measures them on the real engine (their use, not their limits) and
    admits the run, and the run starts and succeeds. The production heavy profile (16 CPUs,
    32g: capped at the host) also gets one slot on that measurement."""
    engine = docker_client.info()
    heavy = chaos_stack.tiers["heavy"]
    wait_earlier_runs_exited(chaos_stack, docker_client)  # their limits would rightly take the slot
    submitted_at = time.time()  # the session's stack has ticks of earlier tests' heavy runs
    run_id = submit(chaos_stack, "heavy", allocate_mb=64, hold_seconds=40)
    wait_run(chaos_stack, run_id, {"STARTED"}, timeout=180)  # admitted: the pool limit is >= 1
    record = scaler_dry_run(chaos_stack, docker_client)
    decision, capacity = record["decision"], record["capacity"]
    assert decision["running"] + decision["queued"] >= 1, record
    assert decision["current_limit"] >= 1 and decision["allowed"] >= 1, record["summary"]
    assert decision["capacity_slots"] >= 1, record
    assert capacity["source"] == "docker", capacity
    assert capacity["total_cpus"] == engine["NCPU"] and capacity["total_memory_bytes"] == engine["MemTotal"]
    services = {h["name"] for h in capacity["holdings"] if h["kind"] == "service" and h["basis"] == "measured"}
    for service in ("postgres", "code-server", "webserver", "daemon", "api", "mlflow"):
        assert any(service in name for name in services), (service, capacity["holdings"])
    assert run_id not in str(capacity["holdings"])  # the admitted run counts in the cap, not twice
    assert capacity["service_memory_bytes"] > 0 and capacity["service_cpus"] < capacity["total_cpus"], capacity
    # The code server (no socket) measures the same through the read-only engine proxy ...
    code_server = docker_client.containers.get(chaos_stack.container_id("code-server"))
    assert "/var/run/docker.sock" not in {m["Destination"] for m in code_server.attrs["Mounts"]}
    in_code_server = record
    assert in_code_server["decision"]["capacity_slots"] >= 1, in_code_server
    assert_services_measured_by_use(chaos_stack, docker_client, in_code_server["capacity"])
    # ... and cannot write to the engine through it.
    code, out = code_server.exec_run(["python", "-c", WRITE_FROM_CODE_SERVER])
    assert code == 0 and out.decode().startswith("403 POST") and "read-only" in out.decode(), out
    # The daemon has no socket either: its launch view refuses a container that is not a hardened run.
    daemon = docker_client.containers.get(chaos_stack.container_id("daemon"))
    assert "/var/run/docker.sock" not in {m["Destination"] for m in daemon.attrs["Mounts"]}
    code, out = daemon.exec_run(["python", "-c", WRITE_FROM_CODE_SERVER])
    assert code == 0 and out.decode().startswith("403") and "refused by the engine proxy" in out.decode(), out
    assert record["heavy_profile"] == {"cpus": float(heavy["cpus"]), "memory_bytes": parse_bytes(heavy["memory"]),
                                       "source": "launcher"}
    measured = HostCapacity(**{k: capacity[k] for k in (
        "source", "total_cpus", "total_memory_bytes", "held_cpus", "held_memory_bytes", "holding_containers",
        "service_cpus", "service_memory_bytes")})
    default = DEFAULT_PROFILES[Tier.HEAVY]
    production = HeavyProfile(float(default.cpus), parse_bytes(default.memory), "default")
    assert measured.slots_for(production) == 1, (measured, measured.need_of(production))
    assert wait_run(chaos_stack, run_id)["status"] == "SUCCESS"
    ticks = graphql(chaos_stack, SCALER_TICKS)["sensorOrError"]["sensorState"]["ticks"]
    admitted = [json.loads(t["cursor"]) for t in ticks if t["cursor"]]
    admitted = [r for r in admitted if r["decision"]["queued"] + r["decision"]["running"] >= 1
                and r["evaluated_at"] >= submitted_at]
    assert admitted and all(r["decision"]["allowed"] >= 1 for r in admitted), admitted[:2]
    for tick in admitted:  # the live sensor in the code server measured on the engine
        assert_services_measured_by_use(chaos_stack, docker_client, tick["capacity"])
    print(f"scaler: {record['summary']}; sensor in the code server measured {admitted[0]['capacity']['source']}: "
          f"{admitted[0]['summary']}; production heavy profile needs {measured.need_of(production)} here; "
          f"code server via the engine proxy: services use {in_code_server['capacity']['service_cpus']:.2f} CPUs, "
          f"{in_code_server['capacity']['service_memory_bytes'] / 2**30:.2f} GiB")


def test_kill_9_of_the_run_container(chaos_stack: ComposeStack, docker_client) -> None:
    inject_fault(chaos_stack, docker_client, FaultCase(
        "kill -9 of the run container",
        lambda run_id: run_container(chaos_stack, docker_client, run_id).kill("SIGKILL"),
        outcomes={"FAILURE"}, reason="killed by SIGKILL"))


def test_daemon_restart(chaos_stack: ComposeStack, docker_client) -> None:
    inject_fault(chaos_stack, docker_client, FaultCase(
        "restart of the daemon",
        lambda _: chaos_stack.compose("restart", "-t", "10", "daemon"),
        outcomes={"SUCCESS"}))


def test_webserver_restart_during_api_calls(chaos_stack: ComposeStack, docker_client) -> None:
    inject_fault(chaos_stack, docker_client, FaultCase(
        "restart of the webserver during API calls",
        lambda _: chaos_stack.compose("restart", "-t", "10", "webserver"),
        outcomes={"SUCCESS"}, api_dependency=True))


def test_data_volume_full_while_an_asset_writes(chaos_stack: ComposeStack, docker_client) -> None:
    def fill(_: str) -> None:
        in_data_volume(chaos_stack, docker_client, f"dd if=/dev/zero of={FILLER} bs=1M 2>&1 || true",
                       read_only=False)

    inject_fault(chaos_stack, docker_client, FaultCase(
        "data volume full (ENOSPC) while an asset writes", fill,
        outcomes={"FAILURE"}, reason="No space left on device",
        after=lambda: in_data_volume(chaos_stack, docker_client, f"rm -f {FILLER}", read_only=False)))


def test_postgres_restart(chaos_stack: ComposeStack, docker_client) -> None:
    inject_fault(chaos_stack, docker_client, FaultCase(
        "restart of Postgres",
        lambda _: chaos_stack.compose("restart", "-t", "10", "postgres"),
        outcomes={"SUCCESS", "FAILURE"}, reason="", api_dependency=True))
