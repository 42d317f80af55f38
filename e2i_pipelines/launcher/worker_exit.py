"""The run worker's exit protocol: how a worker is started and how it says it ended.

Every launcher starts its run worker as ``python -m WORKER_MODULE COMMAND...``
(:func:`worker_argv`). When the run ends the wrapper prints one ``E2I-WORKER-EXIT {...}`` line
(:func:`exit_record`, read back by :func:`parse_exit_record`) and exits with the code a shell
would report (:func:`shell_exit_code`), or ``OOM_EXIT_CODE`` when its memory cgroup counted an
OOM kill. Standard library only: the wrapper imports this before its child starts.
"""

from __future__ import annotations

import json
import os
from typing import Any

EXIT_MARKER = "E2I-WORKER-EXIT"
"""First word of the worker's exit-record line in its log."""
OOM_EXIT_CODE = 137
"""Exit code of a process killed by SIGKILL (128 + 9), as the kernel's OOM killer does."""
WORKER_MODULE = "e2i_pipelines.launcher.run_worker"
"""The module every launcher runs as its worker entrypoint (``python -m``)."""


def worker_argv(python: str, command: list[str]) -> list[str]:
    """The worker's command line: ``python -m WORKER_MODULE`` around the Dagster command."""
    return [python, "-m", WORKER_MODULE, *command]


def shell_exit_code(code: int) -> int:
    """``code`` as a shell reports it: a child killed by signal N (code ``-N``) gives 128 + N."""
    return 128 - code if code < 0 else code


def exit_record(code: int, oom_kills: int | None, cgroup: Any) -> dict[str, Any]:
    """The worker's exit record (what ``E2I-WORKER-EXIT`` prints and the run's tag holds)."""
    return {
        "exit_code": code,
        "signal": -code if code < 0 else None,
        "oom_kills": oom_kills,
        "memory_limit_bytes": cgroup.limit_bytes() if cgroup else None,
        "cgroup": str(cgroup.path) if cgroup else None,
        "node": os.environ.get("E2I_RAY_NODE_NAME", ""),
    }


def exit_line(record: dict[str, Any]) -> str:
    """The log line that carries ``record``."""
    return f"{EXIT_MARKER} {json.dumps(record, sort_keys=True)}"


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
