"""Capacity for heavy runs: the Docker engine's CPUs/memory minus what containers take, a Ray
cluster's heavy nodes (``ray_capacity``), or this machine (psutil) when neither is used.

On Docker, run containers (label ``dagster/run_id``) count with their limits: a run may grow to
them. Every other container (the stack's own services) counts with what it uses now (``docker
stats``: CPU over about a second, memory without page cache), or with the reservation configured
for its compose service (``capacity.reserve``), never more than its limits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import psutil

from e2i_pipelines.scaler.config import ResourceOverride
from e2i_pipelines.scaler.engine_policy import RUN_ID_LABEL
from e2i_pipelines.scaler.profile import HeavyProfile
from e2i_pipelines.scaler.ray_capacity import ray_capacity

SERVICE_LABEL = "com.docker.compose.service"
"""Label docker-compose puts on each service container (the key of ``capacity.reserve``)."""


@dataclass(frozen=True)
class Holding:
    """What one container takes from the host, and on what basis (limits/measured/configured)."""

    name: str
    kind: str  # "run" or "service"
    cpus: float
    memory_bytes: int
    basis: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "cpus": round(self.cpus, 4),
                "memory_bytes": self.memory_bytes, "basis": self.basis}


@dataclass(frozen=True)
class HostCapacity:
    """Totals of the host heavy runs go to, and what other containers already take there.

    ``held_*`` is everything taken (runs' limits + services' use); ``service_*`` the services'
    part, which no run can have: a heavy run larger than the host is capped at what they leave.
    """

    source: str
    total_cpus: float
    total_memory_bytes: int
    held_cpus: float = 0.0
    held_memory_bytes: int = 0
    holding_containers: int = 0
    note: str = ""
    service_cpus: float = 0.0
    service_memory_bytes: int = 0
    holdings: tuple[Holding, ...] = field(default=(), compare=False)

    @classmethod
    def from_holdings(cls, source: str, total_cpus: float, total_memory_bytes: int,
                      holdings: tuple[Holding, ...]) -> HostCapacity:
        """Totals minus what ``holdings`` take."""
        services = [h for h in holdings if h.kind == "service"]
        return cls(
            source=source, total_cpus=total_cpus, total_memory_bytes=total_memory_bytes,
            held_cpus=sum(h.cpus for h in holdings), held_memory_bytes=sum(h.memory_bytes for h in holdings),
            holding_containers=len(holdings), service_cpus=sum(h.cpus for h in services),
            service_memory_bytes=sum(h.memory_bytes for h in services), holdings=holdings,
        )

    @property
    def free_cpus(self) -> float:
        return max(0.0, self.total_cpus - self.held_cpus)

    @property
    def free_memory_bytes(self) -> int:
        return max(0, self.total_memory_bytes - self.held_memory_bytes)

    def need_of(self, profile: HeavyProfile) -> tuple[float, int]:
        """CPUs and memory one ``profile`` run takes here: the profile, capped at what the host
        has beside its services (a container cannot use more; the launcher caps CPUs at the
        engine's), so a host with no other runs always holds at least one heavy run."""
        return (min(profile.cpus, max(0.0, self.total_cpus - self.service_cpus)),
                min(profile.memory_bytes, max(0, self.total_memory_bytes - self.service_memory_bytes)))

    def slots_for(self, profile: HeavyProfile) -> int:
        """How many runs of ``profile`` fit into the free CPU and memory."""
        cpus, memory = self.need_of(profile)
        if cpus <= 0 or memory <= 0:
            return 0
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
            "service_cpus": self.service_cpus,
            "service_memory_bytes": self.service_memory_bytes,
            "free_cpus": self.free_cpus,
            "free_memory_bytes": self.free_memory_bytes,
            "holdings": [h.as_dict() for h in self.holdings],
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


def container_usage(stats: Mapping[str, Any]) -> tuple[float, int]:
    """CPUs and memory bytes a container uses, from one ``docker stats`` sample (the CLI's
    formulas: CPU delta over system delta times online CPUs; memory usage minus inactive file
    cache, ``inactive_file`` on cgroup v2, ``total_inactive_file`` on v1)."""
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (pre.get("cpu_usage") or {}).get("total_usage", 0)
    system_delta = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    cpus = cpu_delta / system_delta * online if cpu_delta > 0 and system_delta > 0 else 0.0
    memory = stats.get("memory_stats") or {}
    detail = memory.get("stats") or {}
    cache = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    return cpus, max(0, int(memory.get("usage") or 0) - int(cache or 0))


def _capped(use: tuple[float, int], limits: tuple[float, int]) -> tuple[float, int]:
    cpus, memory = use
    return (min(cpus, limits[0]) if limits[0] else cpus, min(memory, limits[1]) if limits[1] else memory)


def _labels(container: Any) -> dict[str, str]:
    return container.attrs.get("Config", {}).get("Labels") or {}


def _holding(container: Any, reserve: Mapping[str, ResourceOverride]) -> Holding | None:
    """What ``container`` takes: a run its limits; a service its reservation or its use (None
    when it takes nothing or is gone)."""
    labels = _labels(container)
    limits = container_reservation(container.attrs)
    if RUN_ID_LABEL in labels:
        return Holding(container.name, "run", *limits, "limits") if any(limits) else None
    service = labels.get(SERVICE_LABEL) or container.name
    configured = reserve.get(service)
    if configured is not None and configured.cpus is not None and configured.memory_bytes is not None:
        return Holding(container.name, "service", configured.cpus, configured.memory_bytes, "configured")
    try:
        stats = container.stats(stream=False)
    except Exception:  # noqa: BLE001 - exited since it was listed: it takes nothing
        return None
    cpus, memory = _capped(container_usage(stats), limits)
    if configured is not None:  # one of the two configured, the other measured
        cpus = configured.cpus if configured.cpus is not None else cpus
        memory = configured.memory_bytes if configured.memory_bytes is not None else memory
        return Holding(container.name, "service", cpus, memory, "configured+measured")
    return Holding(container.name, "service", cpus, memory, "measured")


def docker_capacity(client: Any, exclude_run_ids: Collection[str] = (),
                    reserve: Mapping[str, ResourceOverride] | None = None) -> HostCapacity:
    """Engine totals from ``client.info()`` minus what running containers take (module doc).

    Containers of ``exclude_run_ids`` (the in-progress heavy runs) are not subtracted: the cap
    counts those runs itself.
    """
    info = client.info()
    containers = [c for c in client.containers.list() if _labels(c).get(RUN_ID_LABEL) not in exclude_run_ids]
    with ThreadPoolExecutor(max(1, min(8, len(containers)))) as pool:  # each stats call takes ~1 s
        holdings = tuple(h for h in pool.map(lambda c: _holding(c, reserve or {}), containers) if h)
    return HostCapacity.from_holdings("docker", float(info["NCPU"]), int(info["MemTotal"]), holdings)


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
    reserve: Mapping[str, ResourceOverride] | None = None,
) -> Any:
    """Capacity per ``source`` (auto/docker/ray/host); Docker falls back to the host when
    unreachable; a Ray cluster that cannot be asked raises (its capacity is not this machine's)."""
    if source == "ray" or (source == "auto" and launcher_uses_ray(run_launcher)):
        return ray_capacity(run_launcher.address,
                            token_path=getattr(run_launcher, "auth_token_path", None))
    use_docker = source == "docker" or (source == "auto" and launcher_uses_docker(run_launcher))
    if not use_docker:
        return host_capacity()
    try:
        client = docker_client_factory()
        try:
            return docker_capacity(client, exclude_run_ids, reserve)
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - any engine failure means "measure this machine"
        return host_capacity(note=f"docker unreachable, measured this machine: {exc}")
