"""Memory cgroups for tests: a child of this process's own, capped at a limit (v1 or v2)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from e2i_pipelines.launcher.cgroup_memory import CGROUP_ROOT, own_memory_cgroup


def child_memory_cgroup(name: str) -> tuple[Path, int]:
    """Create (if needed) the cgroup ``name`` below this process's memory cgroup; returns its
    path and the cgroup version. Fails loudly when the machine has no memory cgroup."""
    own = own_memory_cgroup()
    if own is None:
        raise RuntimeError("no memory cgroup found for this process")
    if own.version == 2 and own.path != CGROUP_ROOT:
        with contextlib.suppress(OSError):
            (own.path / "cgroup.subtree_control").write_text("+memory")
    path = own.path / name
    path.mkdir(exist_ok=True)
    return path, own.version


def cap_memory(path: Path, version: int, limit_bytes: int) -> None:
    """Hard memory limit of the cgroup at ``path``, swap included (no swap beyond it)."""
    limit = str(limit_bytes)
    if version == 1:
        (path / "memory.limit_in_bytes").write_text(limit)
        swap = path / "memory.memsw.limit_in_bytes"
        if swap.exists():
            swap.write_text(limit)
    else:
        (path / "memory.max").write_text(limit)
        with contextlib.suppress(OSError):
            (path / "memory.swap.max").write_text("0")
