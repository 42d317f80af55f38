"""The run's CPU budget: the launcher sets E2I_N_JOBS from the tier; default all cores."""

from __future__ import annotations

import os


def n_jobs() -> int:
    """Worker threads/processes a job may use (E2I_N_JOBS, else the visible CPU count)."""
    value = os.environ.get("E2I_N_JOBS")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise ValueError(f"E2I_N_JOBS must be an integer, got {value!r}") from None
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
