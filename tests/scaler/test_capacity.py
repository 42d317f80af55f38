"""Host capacity: this machine via psutil, the Docker engine minus held containers, fallback."""

import os
import uuid

import psutil
import pytest

from e2i_pipelines.scaler.capacity import (
    RUN_ID_LABEL,
    SERVICE_LABEL,
    Holding,
    HostCapacity,
    container_reservation,
    container_usage,
    docker_capacity,
    host_capacity,
    launcher_uses_docker,
    measure_capacity,
)
from e2i_pipelines.scaler.config import ResourceOverride
from e2i_pipelines.scaler.profile import HeavyProfile
from tests.conftest import require

GIB = 1024**3


def test_host_capacity_is_this_machine():
    cap = host_capacity()
    assert cap.source == "host"
    assert cap.total_cpus == os.cpu_count()
    assert cap.total_memory_bytes == psutil.virtual_memory().total
    assert cap.held_cpus == 0 and cap.free_memory_bytes == cap.total_memory_bytes


@pytest.mark.parametrize("cpus,memory,held_cpus,held_mem,profile_cpus,profile_mem,slots", [
    (16, 64 * GIB, 0, 0, 16, 32 * GIB, 1),      # cpu-bound
    (64, 64 * GIB, 0, 0, 16, 32 * GIB, 2),      # memory-bound
    (2, 24 * GIB, 0, 0, 16, 32 * GIB, 1),       # heavy larger than the host: capped, one fits
    (2, 24 * GIB, 1, 0, 16, 32 * GIB, 0),       # ... but not while others hold part of it
    (8, 32 * GIB, 4, 8 * GIB, 2, 4 * GIB, 2),   # held resources subtracted
    (8, 32 * GIB, 10, 0, 1, GIB, 0),            # over-committed host: never negative
    (1.5, 3 * GIB, 0, 0, 0.5, GIB, 3),          # exact fractional fit
])
def test_slots_for_profile(cpus, memory, held_cpus, held_mem, profile_cpus, profile_mem, slots):
    cap = HostCapacity("docker", cpus, memory, held_cpus, held_mem)
    assert cap.slots_for(HeavyProfile(profile_cpus, profile_mem, "test")) == slots


def test_override_replaces_only_the_given_totals():
    cap = HostCapacity("host", 2, 24 * GIB).with_override(ResourceOverride(cpus=32))
    assert cap.total_cpus == 32 and cap.total_memory_bytes == 24 * GIB
    assert "overridden" in cap.source
    same = HostCapacity("host", 2, GIB)
    assert same.with_override(ResourceOverride()) is same


def test_container_reservation_reads_nano_cpus_quota_and_memory():
    assert container_reservation({"HostConfig": {"NanoCpus": 1_500_000_000, "Memory": 1024}}) == (1.5, 1024)
    assert container_reservation({"HostConfig": {"CpuQuota": 50000, "CpuPeriod": 100000}}) == (0.5, 0)
    assert container_reservation({"HostConfig": {}}) == (0.0, 0)


class _SubprocessLauncher:
    pass


class DockerRunLauncher:  # same name as dagster-docker's: detection is by class name in the MRO
    pass


class _TieredLauncher(DockerRunLauncher):
    pass


def test_launcher_detection():
    assert launcher_uses_docker(_TieredLauncher())
    assert not launcher_uses_docker(_SubprocessLauncher())


def test_unreachable_docker_falls_back_to_this_machine():
    def broken():
        raise ConnectionError("no engine at unix:///nope.sock")

    cap = measure_capacity("docker", _SubprocessLauncher(), docker_client_factory=broken)
    assert cap.source == "host" and "no engine" in cap.note
    assert cap.total_cpus == os.cpu_count()


def test_auto_uses_host_for_non_docker_launchers():
    def must_not_be_called():
        raise AssertionError("docker queried for a non-docker launcher")

    cap = measure_capacity("auto", _SubprocessLauncher(), docker_client_factory=must_not_be_called)
    assert cap.source == "host" and cap.note == ""


def _stats(total_usage, pre_usage, system, pre_system, online, usage, **memory_stats):
    return {"cpu_stats": {"cpu_usage": {"total_usage": total_usage}, "system_cpu_usage": system,
                          "online_cpus": online},
            "precpu_stats": {"cpu_usage": {"total_usage": pre_usage}, "system_cpu_usage": pre_system},
            "memory_stats": {"usage": usage, "stats": memory_stats}}


def test_container_usage_uses_the_docker_cli_formulas():
    # 0.25 s of CPU over 2 s of system time on 2 CPUs (system time counts every CPU): 0.25 CPUs
    cgroup_v2 = _stats(1_250_000_000, 1_000_000_000, 4_000_000_000, 2_000_000_000, 2,
                       300 * 2**20, inactive_file=100 * 2**20)
    assert container_usage(cgroup_v2) == (pytest.approx(0.25), 200 * 2**20)
    cgroup_v1 = _stats(10, 10, 20, 10, 2, 50 * 2**20, total_inactive_file=20 * 2**20)
    assert container_usage(cgroup_v1) == (0.0, 30 * 2**20)
    assert container_usage({}) == (0.0, 0)  # a container that just stopped reports nothing


def _service(cpus, memory, name="svc"):
    return Holding(name, "service", cpus, memory, "measured")


def test_services_count_with_use_and_a_heavy_run_sized_to_the_host_fits():
    """2 CPUs / 24 GiB with the stack's services using 0.3 CPU and 1.5 GiB: one heavy run (16 CPU /
    32g, capped at what the services leave) fits; a running medium run's limits take it away."""
    services = (_service(0.2, GIB), _service(0.1, GIB // 2))
    heavy = HeavyProfile(16, 32 * GIB, "test")
    cap = HostCapacity.from_holdings("docker", 2, 24 * GIB, services)
    assert cap.need_of(heavy) == (pytest.approx(1.7), 24 * GIB - GIB - GIB // 2)
    assert cap.slots_for(heavy) == 1
    with_run = HostCapacity.from_holdings("docker", 2, 24 * GIB,
                                          (*services, Holding("run-1", "run", 1, 4 * GIB, "limits")))
    assert with_run.slots_for(heavy) == 0
    small = HeavyProfile(0.5, GIB, "test")
    assert with_run.slots_for(small) == 1  # 0.7 CPUs free after the services and the run
    assert HostCapacity.from_holdings("docker", 2, 24 * GIB, (_service(2, GIB),)).slots_for(heavy) == 0


class _Container:
    def __init__(self, name, labels, host_config, stats=None, error=None):
        self.name, self.attrs = name, {"Config": {"Labels": labels}, "HostConfig": host_config}
        self._stats, self._error = stats, error

    def stats(self, stream):
        assert stream is False
        if self._error:
            raise self._error
        return self._stats


class _Engine:
    def __init__(self, containers):
        self.containers = self
        self._containers = containers

    def list(self):
        return self._containers

    def info(self):
        return {"NCPU": 2, "MemTotal": 24 * GIB}


def test_docker_capacity_reserve_overrides_measured_use_per_service():
    busy = _stats(3_000_000_000, 1_000_000_000, 4_000_000_000, 2_000_000_000, 2, 3 * GIB)
    big = {"NanoCpus": 2_000_000_000, "Memory": 8 * GIB}
    engine = _Engine([
        _Container("e2i_postgres_1", {SERVICE_LABEL: "postgres"}, big, busy),
        _Container("e2i_webserver_1", {SERVICE_LABEL: "webserver"}, big, busy),
        _Container("gone", {}, big, error=RuntimeError("404 no such container")),
        _Container("run-a", {RUN_ID_LABEL: "a"}, {"NanoCpus": 1_000_000_000, "Memory": 2 * GIB}),
        _Container("run-b", {RUN_ID_LABEL: "b"}, {"NanoCpus": 1_000_000_000, "Memory": 2 * GIB}),
    ])
    reserve = {"postgres": ResourceOverride(0.5, GIB), "webserver": ResourceOverride(memory_bytes=GIB)}
    cap = docker_capacity(engine, exclude_run_ids={"b"}, reserve=reserve)
    by_name = {h.name: h for h in cap.holdings}
    assert set(by_name) == {"e2i_postgres_1", "e2i_webserver_1", "run-a"}
    assert (by_name["e2i_postgres_1"].cpus, by_name["e2i_postgres_1"].basis) == (0.5, "configured")
    assert by_name["e2i_webserver_1"].cpus == pytest.approx(2.0)  # measured, capped at its limit
    assert by_name["e2i_webserver_1"].memory_bytes == GIB and by_name["run-a"].basis == "limits"
    assert (cap.service_cpus, cap.service_memory_bytes) == (pytest.approx(2.5), 2 * GIB)
    assert (cap.held_cpus, cap.held_memory_bytes) == (pytest.approx(3.5), 4 * GIB)


@pytest.fixture()
def small_image(docker_client):
    tags = [t for img in docker_client.images.list() for t in img.tags]
    require(bool(tags), "a local Docker image")
    return "e2i-base:bookworm" if "e2i-base:bookworm" in tags else tags[0]


@pytest.mark.docker
def test_docker_capacity_counts_service_use_and_run_limits(docker_client, small_image):
    """Real engine: three non-run containers limited to all CPUs and 8 GiB each but idle, and one
    labelled run container. The services count with their (tiny) use, the run with its limits;
    counting the services' limits, as before, would leave no room at all."""
    ncpu = docker_client.info()["NCPU"]
    run_id = f"scaler-test-{uuid.uuid4().hex[:8]}"
    tag = uuid.uuid4().hex[:6]
    started = []
    try:
        for i in range(3):
            started.append(docker_client.containers.run(
                small_image, ["sleep", "120"], detach=True, network_mode="none", name=f"e2i-svc-{tag}-{i}",
                nano_cpus=ncpu * 10**9, mem_limit="8g", labels={SERVICE_LABEL: f"svc{i}"}))
        started.append(docker_client.containers.run(
            small_image, ["sleep", "120"], detach=True, network_mode="none", name=f"e2i-run-{tag}",
            nano_cpus=500_000_000, mem_limit="1g", labels={RUN_ID_LABEL: run_id}))
        cap = docker_capacity(docker_client)
        excluded = docker_capacity(docker_client, exclude_run_ids={run_id})
    finally:
        for container in started:
            container.remove(force=True)
    ours = tuple(h for h in cap.holdings if tag in h.name)
    by_kind = {kind: [h for h in ours if h.kind == kind] for kind in ("service", "run")}
    assert len(by_kind["service"]) == 3 and all(h.basis == "measured" for h in by_kind["service"])
    assert all(h.cpus < 0.1 and h.memory_bytes < 64 * 2**20 for h in by_kind["service"]), ours
    assert [(h.cpus, h.memory_bytes, h.basis) for h in by_kind["run"]] == [(0.5, GIB, "limits")]
    assert not any(f"e2i-run-{tag}" == h.name for h in excluded.holdings)

    heavy = HeavyProfile(16, 32 * GIB, "default heavy profile")
    services_only = HostCapacity.from_holdings("docker", cap.total_cpus, cap.total_memory_bytes,
                                               tuple(by_kind["service"]))
    assert services_only.slots_for(heavy) == 1  # one heavy run sized to the host
    need_cpus, need_memory = services_only.need_of(heavy)
    assert need_cpus > ncpu - 0.3 and need_memory > cap.total_memory_bytes - 192 * 2**20
    with_run = HostCapacity.from_holdings("docker", cap.total_cpus, cap.total_memory_bytes, ours)
    assert with_run.slots_for(heavy) == 0  # the run's limits are taken
    as_limits = HostCapacity("docker", cap.total_cpus, cap.total_memory_bytes, held_cpus=3 * ncpu)
    assert as_limits.slots_for(heavy) == 0
