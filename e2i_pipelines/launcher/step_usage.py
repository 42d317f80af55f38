"""What each step used: peak memory and CPU time, measured in the step's own process.

A job-wide hook (:mod:`e2i_pipelines.defs.launcher.step_usage`) calls :func:`record_step_usage`
in the process that ran the step, right after the step succeeded or failed:

- **multiprocess executor** (the default): every step is its own process (spawned, or forked
  from a forkserver), so its peak is the step's, including the Python + code-location baseline
  (~200-300 MB) it starts with (pages shared with a forkserver count in full);
- **in-process executor** (``execute_in_process``, the quick start): the steps share one process.
  After each step the peak is reset (``/proc/self/clear_refs``), so a step's peak covers only the
  time since the previous step ended, on top of what earlier steps left resident;
  ``e2i/steps_in_process`` > 1 says so.

Peak memory is the process's ``VmHWM`` (else ``getrusage(RUSAGE_SELF).ru_maxrss``) plus the
largest subprocess the step waited for, when that rose during the step (an upper bound when
they overlapped). CPU time is the process's and its waited-for children's since the previous
step in the process ended (the first includes start-up). A step killed by the kernel records
nothing; its run's cgroup peak still does.

The record is one engine event on the step (metadata below), stored with the run's events in
the instance, shown in the UI and read back by :func:`usage_of`. The run worker (for a run
without it, the run-cost sensor) folds it into ``e2i/step_inputs`` and names the step with the
largest peak in ``e2i/peak_step``.
"""

from __future__ import annotations

import re
import resource
from pathlib import Path
from typing import Any

PEAK_KEY = "e2i/step_peak_memory"
CPU_KEY = "e2i/step_cpu_seconds"
STEPS_IN_PROCESS_KEY = "e2i/steps_in_process"
PEAK_STEP_TAG = "e2i/peak_step"
PEAK_STEP_MEMORY_TAG = "e2i/peak_step_memory"
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_HWM = re.compile(r"^VmHWM:\s+(\d+)\s+kB", re.MULTILINE)
_LARGEST = 2**63  # bytes or seconds beyond this are not a measurement
_state = {"steps": 0, "cpu": 0.0, "children_peak": 0}


def _own_peak_bytes() -> int:
    """This process's peak resident memory since it started or its last reset."""
    try:
        found = _HWM.search(_STATUS.read_text())
        if found:
            return int(found.group(1)) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def reset_peak() -> bool:
    """Reset this process's peak to its current resident memory (Linux >= 4.0; False if not)."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def measure() -> dict[str, float | int]:
    """Usage since the previous call in this process (or its start): the event's metadata."""
    children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    risen = children_peak if children_peak > _state["children_peak"] else 0
    cpu = _cpu_seconds()
    usage = {PEAK_KEY: _own_peak_bytes() + risen, CPU_KEY: round(cpu - _state["cpu"], 3),
             STEPS_IN_PROCESS_KEY: _state["steps"] + 1}
    _state.update(steps=_state["steps"] + 1, cpu=cpu, children_peak=max(children_peak, _state["children_peak"]))
    return usage


def record_step_usage(context: Any) -> None:
    """Measure the step that just ended and store it as an engine event on that step (a hook)."""
    from dagster._core.events import EngineEventData

    usage = measure()
    reset_peak()
    context.instance.report_engine_event(
        f"e2i step usage: peak {usage[PEAK_KEY] / 2**20:.0f} MiB, CPU {usage[CPU_KEY]:.1f} s",
        engine_event_data=EngineEventData(metadata=usage),
        step_key=context.step_key, job_name=context.job_name, run_id=context.run_id,
    )


def as_number(value: Any, kind: type = float) -> float | int | None:
    """``value`` (or a metadata value's ``.value``) as a finite non-negative ``kind``, else None."""
    raw = getattr(value, "value", value)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw < _LARGEST:
        return None  # also NaN and infinities
    return kind(raw)


def usage_of(event: Any) -> dict[str, float]:
    """``peak_memory_bytes`` and ``cpu_seconds`` from a step-usage engine event ({} otherwise)."""
    metadata = getattr(getattr(event, "event_specific_data", None), "metadata", None) or {}
    if PEAK_KEY not in metadata:
        return {}
    found = {"peak_memory_bytes": as_number(metadata[PEAK_KEY], int),
             "cpu_seconds": as_number(metadata.get(CPU_KEY))}
    return {key: value for key, value in found.items() if value is not None}


def peak_step_tags(steps: dict[str, dict[str, float]]) -> dict[str, str]:
    """``e2i/peak_step`` (the step with the largest measured peak) and its peak in bytes."""
    peaks = {step: found["peak_memory_bytes"] for step, found in steps.items() if "peak_memory_bytes" in found}
    if not peaks:
        return {}
    step = max(sorted(peaks), key=peaks.__getitem__)
    return {PEAK_STEP_TAG: step, PEAK_STEP_MEMORY_TAG: str(int(peaks[step]))}
