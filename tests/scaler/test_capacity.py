"""Host capacity: this machine via psutil, the Docker engine minus held containers, fallback."""

import os
import uuid

import psutil
import pytest

from e2i_pipelines.scaler.capacity import (
    RUN_ID_LABEL,
    HostCapacity,
    container_reservation,
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


@pytest.mark.docker
def test_docker_capacity_subtracts_running_containers(docker_client):
    images = [t for img in docker_client.images.list() for t in img.tags]
    require(bool(images), "a local Docker image")
    run_id = f"scaler-test-{uuid.uuid4().hex[:8]}"
    container = docker_client.containers.run(
        images[0], ["sleep", "60"], detach=True, auto_remove=False, network_mode="none",
        nano_cpus=500_000_000, mem_limit="64m", labels={RUN_ID_LABEL: run_id},
    )
    try:
        with_it = docker_capacity(docker_client)
        without_it = docker_capacity(docker_client, exclude_run_ids={run_id})
    finally:
        container.remove(force=True)
    info = docker_client.info()
    assert with_it.source == "docker"
    assert with_it.total_cpus == info["NCPU"] and with_it.total_memory_bytes == info["MemTotal"]
    assert with_it.held_cpus - without_it.held_cpus == pytest.approx(0.5)
    assert with_it.held_memory_bytes - without_it.held_memory_bytes == 64 * 1024**2
    assert with_it.holding_containers - without_it.holding_containers == 1
