"""Capacity for heavy runs: the Docker engine's CPUs/memory minus what containers hold, a Ray
cluster's heavy nodes (``ray_capacity``), or this machine (psutil) when neither is used."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Any

import psutil

from e2i_pipelines.scaler.config import ResourceOverride
from e2i_pipelines.scaler.profile import HeavyProfile

RUN_ID_LABEL = "dagster/run_id"
"""Label DockerRunLauncher puts on each run container."""


@dataclass(frozen=True)
class HostCapacity:
    """Totals of the host heavy runs go to, and what other containers already hold there."""

    source: str
    total_cpus: float
    total_memory_bytes: int
    held_cpus: float = 0.0
    held_memory_bytes: int = 0
    holding_containers: int = 0
    note: str = ""

    @property
    def free_cpus(self) -> float:
        return max(0.0, self.total_cpus - self.held_cpus)

    @property
    def free_memory_bytes(self) -> int:
        return max(0, self.total_memory_bytes - self.held_memory_bytes)

    def need_of(self, profile: HeavyProfile) -> tuple[float, int]:
        """CPUs and memory one ``profile`` run takes here: the profile, capped at the host totals
        (a container cannot use more than the engine has; the launcher caps CPUs the same way),
        so an empty host always holds at least one run."""
        return min(profile.cpus, self.total_cpus), min(profile.memory_bytes, self.total_memory_bytes)

    def slots_for(self, profile: HeavyProfile) -> int:
        """How many runs of ``profile`` fit into the free CPU and memory."""
        cpus, memory = self.need_of(profile)
        by_cpu = self.free_cpus / cpus
        by_memory = self.free_memory_bytes / memory
        return max(0, math.floor(min(by_cpu, by_memory) + 1e-9))

    def with_override(self, override: ResourceOverride) -> HostCapacity:
        """Replace measured totals by the configured ones (where set)."""
        if override.cpus is None and override.memory_bytes is None:
            return self
        return replace(
            self,
            total_cpus=override.cpus if override.cpus is not None else self.total_cpus,
            total_memory_bytes=(
                override.memory_bytes if override.memory_bytes is not None
                else self.total_memory_bytes
            ),
            source=f"{self.source} (totals overridden by config)",
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "total_cpus": self.total_cpus,
            "total_memory_bytes": self.total_memory_bytes,
            "held_cpus": self.held_cpus,
            "held_memory_bytes": self.held_memory_bytes,
            "holding_containers": self.holding_containers,
            "free_cpus": self.free_cpus,
            "free_memory_bytes": self.free_memory_bytes,
            "note": self.note,
        }


def host_capacity(note: str = "") -> HostCapacity:
    """This machine's CPUs and physical memory (no containers involved)."""
    return HostCapacity(
        source="host",
        total_cpus=float(psutil.cpu_count(logical=True) or 1),
        total_memory_bytes=int(psutil.virtual_memory().total),
        note=note,
    )


def container_reservation(attrs: dict[str, Any]) -> tuple[float, int]:
    """CPUs and memory bytes a container is limited to (0 where it sets no limit)."""
    host_config = attrs.get("HostConfig") or {}
    cpus = (host_config.get("NanoCpus") or 0) / 1e9
    quota, period = host_config.get("CpuQuota") or 0, host_config.get("CpuPeriod") or 0
    if not cpus and quota > 0 and period > 0:
        cpus = quota / period
    return cpus, int(host_config.get("Memory") or 0)


def docker_capacity(client: Any, exclude_run_ids: Collection[str] = ()) -> HostCapacity:
    """Engine totals from ``client.info()`` minus running containers' limits.

    Containers of ``exclude_run_ids`` (the in-progress heavy runs) are not subtracted: the cap
    counts those runs itself.
    """
    info = client.info()
    held_cpus, held_memory, holding = 0.0, 0, 0
    for container in client.containers.list():
        labels = container.attrs.get("Config", {}).get("Labels") or {}
        if labels.get(RUN_ID_LABEL) in exclude_run_ids:
            continue
        cpus, memory = container_reservation(container.attrs)
        if cpus or memory:
            holding += 1
        held_cpus += cpus
        held_memory += memory
    return HostCapacity(
        source="docker",
        total_cpus=float(info["NCPU"]),
        total_memory_bytes=int(info["MemTotal"]),
        held_cpus=held_cpus,
        held_memory_bytes=held_memory,
        holding_containers=holding,
    )


def launcher_uses_ray(run_launcher: Any) -> bool:
    """True when the run launcher is (a subclass of) dagster-ray's RayRunLauncher."""
    return any(cls.__name__ == "RayRunLauncher" for cls in type(run_launcher).__mro__)


def launcher_uses_docker(run_launcher: Any) -> bool:
    """True when the run launcher is (a subclass of) dagster-docker's DockerRunLauncher."""
    return any(cls.__name__ == "DockerRunLauncher" for cls in type(run_launcher).__mro__)


def docker_client_from_env() -> Any:
    import docker

    return docker.from_env(timeout=5)


def measure_capacity(
    source: str,
    run_launcher: Any,
    exclude_run_ids: Collection[str] = (),
    docker_client_factory: Callable[[], Any] = docker_client_from_env,
) -> Any:
    """Capacity per ``source`` (auto/docker/ray/host); Docker falls back to the host when
    unreachable; a Ray cluster that cannot be asked raises (its capacity is not this machine's)."""
    if source == "ray" or (source == "auto" and launcher_uses_ray(run_launcher)):
        from e2i_pipelines.scaler.ray_capacity import ray_capacity

        return ray_capacity(run_launcher.address)
    use_docker = source == "docker" or (source == "auto" and launcher_uses_docker(run_launcher))
    if not use_docker:
        return host_capacity()
    try:
        client = docker_client_factory()
        try:
            return docker_capacity(client, exclude_run_ids)
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - any engine failure means "measure this machine"
        return host_capacity(note=f"docker unreachable, measured this machine: {exc}")
