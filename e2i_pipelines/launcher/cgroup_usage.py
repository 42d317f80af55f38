"""What a run worker used: peak memory and CPU time, from its cgroup or its process tree.

The run worker reads these about itself when its run ends (:mod:`~e2i_pipelines.launcher.run_worker`):

- **cgroup** (a container, a Ray node's container, a pod): peak memory from ``memory.peak`` (v2)
  or ``memory.max_usage_in_bytes`` (v1), CPU time from ``cpu.stat`` ``usage_usec`` (v2) or
  ``cpuacct.usage`` (v1, nanoseconds). The memory cgroup counts only when it has a limit (it was
  sized for the run); the CPU counter is the difference over the run, read only in a cgroup that
  is not the host's root.
- **rusage** otherwise (a bare host, the sandbox of a test): ``getrusage(RUSAGE_CHILDREN)`` after
  the run worker was waited for: the largest single descendant's peak RSS, and the CPU time of
  every descendant that was waited for.

Only the standard library is imported: the wrapper stays small while the run works.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

from e2i_pipelines.launcher.cgroup_memory import CGROUP_ROOT, MemoryCgroup, cgroup_entries, mounted

PEAK_MEMORY_TAG = "e2i/peak_memory"
CPU_SECONDS_TAG = "e2i/cpu_seconds"
MEMORY_UTILISATION_TAG = "e2i/memory_utilisation"
CPU_UTILISATION_TAG = "e2i/cpu_utilisation"
USAGE_SOURCE_TAG = "e2i/usage_source"
USAGE_TAGS = (PEAK_MEMORY_TAG, CPU_SECONDS_TAG, MEMORY_UTILISATION_TAG, CPU_UTILISATION_TAG)


def read_int(path: Path) -> int | None:
    """The integer in ``path``; None when missing or not a number."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def stat_value(path: Path, key: str) -> int | None:
    """``key``'s value in a flat-keyed cgroup file such as ``cpu.stat``."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def peak_memory_bytes(cgroup: MemoryCgroup) -> int | None:
    """Highest memory use recorded for ``cgroup`` (and below) since it was created."""
    name = "memory.peak" if cgroup.version == 2 else "memory.max_usage_in_bytes"
    return read_int(cgroup.path / name)


@dataclass(frozen=True)
class CpuCgroup:
    """A cgroup directory holding a cumulative CPU-time counter (v1 ``cpuacct`` or v2)."""

    path: Path
    version: int

    def cpu_seconds(self) -> float | None:
        """CPU time used by the cgroup's processes so far, in seconds."""
        if self.version == 2:
            usec = stat_value(self.path / "cpu.stat", "usage_usec")
            return usec / 1e6 if usec is not None else None
        nsec = read_int(self.path / "cpuacct.usage")
        return nsec / 1e9 if nsec is not None else None


def own_cpu_cgroup(pid: str = "self", root: Path = CGROUP_ROOT) -> CpuCgroup | None:
    """The CPU-accounting cgroup of ``pid``; None when it is the host's root (shared by all)."""
    entries = cgroup_entries(pid)
    for _, controllers, path in entries:
        if "cpuacct" in controllers.split(",") and (root / "cpuacct").is_dir():
            if path == "/":
                return None  # the host's root: every process on the machine
            return CpuCgroup(mounted(root / "cpuacct", path, "cpuacct.usage"), 1)
    for hierarchy, controllers, path in entries:
        if hierarchy == "0" and controllers == "":
            unified = root / "unified" if (root / "unified" / "cgroup.procs").exists() else root
            found = mounted(unified, path, "cpu.stat")
            # The host's root has no memory.max; a container's namespaced root has.
            if (found / "cpu.stat").exists() and (found / "memory.max").exists():
                return CpuCgroup(found, 2)
    return None


@dataclass(frozen=True)
class Usage:
    """What a run worker used: peak bytes, CPU seconds, wall seconds, and where they come from."""

    peak_bytes: int | None
    cpu_seconds: float | None
    wall_seconds: float
    source: str

    def as_record(self) -> dict[str, object]:
        """Fields for the worker's exit record."""
        return {"peak_memory_bytes": self.peak_bytes, "cpu_seconds": self.cpu_seconds,
                "wall_seconds": round(self.wall_seconds, 3), "usage_source": self.source}


class UsageMeter:
    """Started before the run worker, read after it was waited for."""

    def __init__(self, memory: MemoryCgroup | None, cpu: CpuCgroup | None) -> None:
        self.memory = memory if memory is not None and memory.limit_bytes() is not None else None
        self.cpu = cpu
        self.cpu_before = cpu.cpu_seconds() if cpu is not None else None

    def read(self, wall_seconds: float) -> Usage:
        """Usage since the meter started (call after the run worker was waited for)."""
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak = peak_memory_bytes(self.memory) if self.memory is not None else None
        cpu_after = self.cpu.cpu_seconds() if self.cpu is not None else None
        cpu = cpu_after - self.cpu_before if cpu_after is not None and self.cpu_before is not None else None
        sources = [f"memory: cgroup v{self.memory.version}" if peak is not None else "memory: rusage",
                   f"cpu: cgroup v{self.cpu.version}" if cpu is not None else "cpu: rusage"]
        if peak is None:
            peak = children.ru_maxrss * 1024  # KiB on Linux
        if cpu is None:
            cpu = children.ru_utime + children.ru_stime
        return Usage(peak, round(cpu, 3), wall_seconds, ", ".join(sources))


def tag_number(tags: dict[str, str], key: str, kind: type = float) -> float | int | None:
    """The number in usage tag ``key`` (None when absent or not a finite non-negative number)."""
    try:
        value = kind(tags[key])
    except (KeyError, ValueError, TypeError):
        return None
    return value if 0 <= value < float("inf") else None


def utilisation(used: float | None, budget: float | None) -> float | None:
    """``used / budget`` (None when either is unknown or the budget is not positive)."""
    if used is None or budget is None or budget <= 0:
        return None
    return used / budget


def usage_tags(usage: Usage, cpus: float | None, memory_bytes: int | None) -> dict[str, str]:
    """Run tags for ``usage`` against the budget: ``cpus`` x wall time and ``memory_bytes``."""
    tags = {USAGE_SOURCE_TAG: usage.source}
    if usage.peak_bytes is not None:
        tags[PEAK_MEMORY_TAG] = str(usage.peak_bytes)
    if usage.cpu_seconds is not None:
        tags[CPU_SECONDS_TAG] = f"{usage.cpu_seconds:.3f}"
    memory = utilisation(usage.peak_bytes, memory_bytes)
    cpu = utilisation(usage.cpu_seconds, cpus * usage.wall_seconds if cpus else None)
    if memory is not None:
        tags[MEMORY_UTILISATION_TAG] = f"{memory:.4f}"
    if cpu is not None:
        tags[CPU_UTILISATION_TAG] = f"{cpu:.4f}"
    return tags
