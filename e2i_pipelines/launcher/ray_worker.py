"""Entrypoint of a Ray run's job: the run worker in a cgroup of its own, capped at its tier.

A Ray node hosts its own processes (raylet, agents, each job's supervisor) and, over its life,
many runs: its memory cgroup's peak belongs to none of them. So before the run worker starts,
``python -m e2i_pipelines.launcher.ray_worker --memory BYTES COMMAND...`` makes a cgroup for the
run below the node's own (``e2i-run-<pid>``, in the cgroup v1 ``memory`` and ``cpuacct``
hierarchies), caps its memory at ``BYTES`` (the tier's), moves itself into it and runs
:func:`e2i_pipelines.launcher.run_worker.run`. The run's peak memory, CPU time and OOM kills are
then the run's own, and its tier is a hard limit even on a node larger than the tier. Afterwards
the wrapper moves back to the node's cgroup and removes the run's.

Where the node's cgroup cannot be divided (a read-only ``/sys/fs/cgroup`` in a container; cgroup
v2, where a cgroup that holds processes cannot give children a memory controller: not divided
here), the run worker measures as it does anywhere: the node's memory cgroup when it has a limit
(then the peak is the node's since it started, Ray's own processes included: an upper bound),
else ``getrusage`` of the run worker's process tree. The run's ``e2i/usage_scope`` tag says which
(:data:`SCOPE_RUN` or :data:`SCOPE_NODE` with the reason).

Only the standard library is imported before the run worker's child exits.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from e2i_pipelines.launcher import run_worker
from e2i_pipelines.launcher.cgroup_memory import CGROUP_ROOT, cgroup_entries, mounted

RAY_WORKER_MODULE = "e2i_pipelines.launcher.ray_worker"
USAGE_SCOPE_TAG = "e2i/usage_scope"
SCOPE_RUN = "run cgroup"
SCOPE_NODE = "node (no per-run cgroup)"
_V1_CONTROLLERS = ("memory", "cpuacct")


def ray_worker_argv(python: str, command: list[str], memory_bytes: int | None) -> list[str]:
    """The Ray job's command line: this wrapper (with the tier's memory) around ``command``."""
    cap = ["--memory", str(int(memory_bytes))] if memory_bytes else []
    return [python, "-m", RAY_WORKER_MODULE, *cap, *command]


def parse_argv(argv: list[str]) -> tuple[int | None, list[str]]:
    """(memory cap in bytes, run worker command) from this module's arguments; ValueError names
    a malformed ``--memory``."""
    if argv[:1] != ["--memory"]:
        return None, argv
    raw = argv[1] if len(argv) > 1 else ""
    if not (raw.isascii() and raw.isdigit() and 0 < int(raw) < 1 << 60):
        raise ValueError("--memory: expected a positive number of bytes")
    return int(raw), argv[2:]


@dataclass
class RunCgroup:
    """The cgroup directories this wrapper made and moved into (one per v1 hierarchy)."""

    made: list[Path] = field(default_factory=list)

    def leave(self, timeout: float = 5.0) -> None:
        """Move back to each parent cgroup and remove the run's (once its processes are gone)."""
        for path in self.made:
            with contextlib.suppress(OSError):
                (path.parent / "cgroup.procs").write_text(str(os.getpid()))
        deadline = time.monotonic() + timeout
        for path in self.made:
            while path.exists():
                try:
                    path.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        print(f"e2i ray worker: cgroup {path} still busy, left in place", flush=True)
                        break
                    time.sleep(0.1)


def _cap(path: Path, limit: int) -> None:
    """Hard memory limit of the v1 cgroup at ``path``, swap included."""
    (path / "memory.limit_in_bytes").write_text(str(limit))
    swap = path / "memory.memsw.limit_in_bytes"
    if swap.exists():
        swap.write_text(str(limit))


def _v1_parents(root: Path) -> dict[str, Path]:
    """This process's v1 ``memory`` and ``cpuacct`` cgroup directories (those mounted here)."""
    found: dict[str, Path] = {}
    for _, controllers, path in cgroup_entries():
        for name in _V1_CONTROLLERS:
            probe = "memory.limit_in_bytes" if name == "memory" else "cpuacct.usage"
            if name in controllers.split(",") and (root / name).is_dir():
                found[name] = mounted(root / name, path, probe)
    return found


def enter_run_cgroup(memory_bytes: int | None, root: Path = CGROUP_ROOT) -> tuple[RunCgroup | None, str]:
    """Make the run's cgroup below this process's own, cap it, move in; (cgroup, why) where the
    cgroup is None when the node's cgroup could not be divided."""
    name = f"e2i-run-{os.getpid()}"
    parents = _v1_parents(root)
    if "memory" not in parents:
        return None, "no cgroup v1 memory hierarchy (v2: a cgroup holding processes cannot give children memory)"
    made = RunCgroup()
    try:
        for controller, parent in parents.items():
            path = parent / name
            path.mkdir(exist_ok=True)
            made.made.append(path)
            if controller == "memory" and memory_bytes:
                _cap(path, memory_bytes)
            (path / "cgroup.procs").write_text(str(os.getpid()))
    except OSError as exc:
        made.leave(timeout=1.0)
        return None, f"cannot divide the node's cgroup ({exc.strerror or exc})"
    return made, f"{SCOPE_RUN} v1"


def record_scope(command: list[str], scope: str) -> None:
    """Put ``e2i/usage_scope`` on the run (best effort, like the run worker's own records)."""
    args = run_worker.run_args(command)
    if args is None or getattr(args, "instance_ref", None) is None:
        return
    try:
        from dagster import DagsterInstance

        with DagsterInstance.from_ref(args.instance_ref) as instance:
            instance.add_run_tags(args.run_id, {USAGE_SCOPE_TAG: scope})
    except Exception as exc:  # noqa: BLE001 - never hide the run's own exit code
        print(f"e2i ray worker: could not record the usage scope: {exc}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    """Run the run worker inside the run's own cgroup when the node allows it."""
    try:
        memory_bytes, command = parse_argv(argv)
    except ValueError as exc:
        print(f"e2i ray worker: {exc}", file=sys.stderr, flush=True)
        return 2
    cgroup, why = enter_run_cgroup(memory_bytes)
    scope = why if cgroup is not None else f"{SCOPE_NODE}: {why}"
    print(f"e2i ray worker: usage measured in {scope}", flush=True)
    try:
        code = run_worker.run(command)
    finally:
        if cgroup is not None:
            cgroup.leave()
    record_scope(command, scope)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
