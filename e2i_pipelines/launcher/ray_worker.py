"""Entrypoint of an e2i run on a Ray node: run the Dagster run worker, then say how it ended.

``python -m e2i_pipelines.launcher.ray_worker dagster api execute_run '<json>'`` starts the run
worker as a child with ``oom_score_adj`` 1000, so that when the node's memory cgroup is full the
kernel kills the run, not Ray's job supervisor. When the child exits, one line
``E2I-WORKER-EXIT {...}`` goes to the job log: exit code, OOM kills seen in this node's memory
cgroup while the run worked, the cgroup's limit and the node. The launcher reads that line
(``TieredRayRunLauncher.diagnose``); this module only reports evidence, it diagnoses nothing.
Only the standard library is imported here, so the wrapper itself stays a few MB.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from e2i_pipelines.launcher.cgroup_memory import own_memory_cgroup

EXIT_MARKER = "E2I-WORKER-EXIT"
OOM_EXIT_CODE = 137


def _set_oom_score(value: int) -> None:
    """This process's ``oom_score_adj`` (best effort: lowering it needs privilege)."""
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write(str(value))
    except OSError:
        pass


def _prefer_oom_kill() -> None:
    """In the child: be the first the OOM killer picks (raising the score needs no privilege)."""
    _set_oom_score(1000)


def run(argv: list[str]) -> int:
    """Run ``argv`` as the run worker; print the exit record; return the exit code to use."""
    if not argv:
        print("usage: python -m e2i_pipelines.launcher.ray_worker COMMAND...", file=sys.stderr)
        return 2
    cgroup = own_memory_cgroup()
    before = cgroup.oom_kills() if cgroup else None
    _set_oom_score(-500)  # the wrapper's report should survive the kill
    child = subprocess.Popen(argv, preexec_fn=_prefer_oom_kill)  # noqa: PLW1509 - sets a score only
    # Ray stops a job by signalling its whole process group: the child gets it too; wait for it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    code = child.wait()
    after = cgroup.oom_kills() if cgroup else None
    oom_kills = (after - before) if before is not None and after is not None else None
    record = {
        "exit_code": code,
        "signal": -code if code < 0 else None,
        "oom_kills": oom_kills,
        "memory_limit_bytes": cgroup.limit_bytes() if cgroup else None,
        "cgroup": str(cgroup.path) if cgroup else None,
        "node": os.environ.get("E2I_RAY_NODE_NAME", ""),
    }
    print(f"{EXIT_MARKER} {json.dumps(record, sort_keys=True)}", flush=True)
    if oom_kills:
        return OOM_EXIT_CODE
    return 128 - code if code < 0 else code


def parse_exit_record(log_text: str) -> dict | None:
    """The last ``E2I-WORKER-EXIT`` record in a job log, or None."""
    for line in reversed(log_text.splitlines()):
        head, _, payload = line.strip().partition(" ")
        if head == EXIT_MARKER:
            try:
                return json.loads(payload)
            except ValueError:
                return None
    return None


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
