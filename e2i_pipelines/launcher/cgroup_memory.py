"""The memory cgroup a process runs in: its OOM-kill counter and limit (cgroup v1 and v2), and
how to find any controller's cgroup directory from ``/proc/<pid>/cgroup``.

A run worker reads these about itself, so an OOM kill of any of its processes is seen where it
happened (inside a container, a Ray node's cgroup, a VM's service slice) without the engine's API.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_NO_LIMIT = 1 << 60


@dataclass(frozen=True)
class MemoryCgroup:
    """One memory cgroup directory and the files that hold its OOM kills and limit."""

    path: Path
    version: int

    @property
    def _events_file(self) -> Path:
        return self.path / ("memory.events" if self.version == 2 else "memory.oom_control")

    def oom_kills(self) -> int | None:
        """Processes of this cgroup (and below) killed by the OOM killer so far."""
        try:
            for line in self._events_file.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except OSError:
            return None
        return None

    def limit_bytes(self) -> int | None:
        """The memory limit in bytes, None when unlimited or unreadable."""
        name = "memory.max" if self.version == 2 else "memory.limit_in_bytes"
        try:
            text = (self.path / name).read_text().strip()
        except OSError:
            return None
        if text == "max" or int(text) >= _NO_LIMIT:
            return None
        return int(text)


def cgroup_entries(pid: str = "self") -> list[list[str]]:
    """``/proc/<pid>/cgroup`` as [hierarchy, controllers, path] rows (empty when unreadable)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return []
    return [line.split(":", 2) for line in lines if line.count(":") >= 2]


def own_memory_cgroup(pid: str = "self", root: Path = CGROUP_ROOT) -> MemoryCgroup | None:
    """The memory cgroup of ``pid`` (v1 ``memory`` hierarchy, else the v2 unified one)."""
    entries = cgroup_entries(pid)
    for _, controllers, path in entries:
        if "memory" in controllers.split(",") and (root / "memory").is_dir():
            return MemoryCgroup(mounted(root / "memory", path, "memory.oom_control"), 1)
    for hierarchy, controllers, path in entries:
        if hierarchy == "0" and controllers == "":
            unified = root / "unified" if (root / "unified" / "cgroup.procs").exists() else root
            found = MemoryCgroup(mounted(unified, path, "memory.events"), 2)
            if (found.path / "memory.events").exists():
                return found
    return None


def mounted(mount: Path, path: str, probe: str) -> Path:
    """The cgroup directory for ``path`` under ``mount``. Inside a container (cgroup v1 without
    a cgroup namespace) /proc shows the host's path while the container's own cgroup is mounted
    at the hierarchy root: fall back to the root when the path is not there."""
    full = mount / path.lstrip("/")
    if not (full / probe).exists() and (mount / probe).exists():
        full = mount
    return full
