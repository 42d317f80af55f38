"""Why a run container stopped: OOM kill, crash, SIGKILL or vanished, as a readable reason.

Input is Docker's ``State`` dict (``docker inspect``) and the run's step events; output is a
:class:`ContainerDiagnosis` whose ``message`` goes on the run (tag + engine event + failure).
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import DagsterEventType, EventLogEntry

OOM = "oom"
KILLED = "killed"
CRASHED = "crashed"
MISSING = "container_missing"
EXITED = "exited"


@dataclass(frozen=True)
class ContainerDiagnosis:
    """Kind of container end (``oom``/``killed``/``crashed``/``container_missing``/``exited``)."""

    kind: str
    message: str
    exit_code: int | None = None

    @property
    def is_failure(self) -> bool:
        return self.kind != EXITED


_STEP_END = {DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_SKIPPED}
STEP_EVENT_TYPES = {DagsterEventType.STEP_START, DagsterEventType.STEP_FAILURE, *_STEP_END}


def unfinished_steps(events: Iterable[EventLogEntry], include_failed: bool = False) -> list[str]:
    """Step keys started but not ended, in start order (``include_failed``: count failures as
    unfinished, for a run whose executor already reported the killed step as failed)."""
    started: dict[str, None] = {}
    for entry in events:
        event = entry.dagster_event
        if event is None or event.event_type not in STEP_EVENT_TYPES or not event.step_key:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            started[event.step_key] = None
        elif event.event_type in _STEP_END or not include_failed:
            started.pop(event.step_key, None)
    return list(started)


def _steps_text(steps: list[str]) -> str:
    if not steps:
        return "before any step started"
    return f"while running step {', '.join(steps)}"


def diagnose_state(
    state: Mapping[str, Any] | None, *, tier: str, memory: str, steps: list[str],
    container_id: str = "", log_tail: str = "",
) -> ContainerDiagnosis:
    """Classify a stopped container from its Docker ``State``."""
    short = container_id[:12]
    if state is None:
        return ContainerDiagnosis(
            MISSING,
            f"Run container {short} disappeared (removed or never created) {_steps_text(steps)}"
            f" at tier {tier}; the run worker cannot report its result.",
        )
    code = state.get("ExitCode")
    where = f"at tier {tier} (memory limit {memory}) {_steps_text(steps)}"
    if state.get("OOMKilled"):
        return ContainerDiagnosis(
            OOM, f"Run container {short} was OOM-killed {where} (exit code {code}).", code
        )
    if code == 137:
        return ContainerDiagnosis(
            KILLED,
            f"Run container {short} was killed by SIGKILL (exit code 137) {where}; Docker did not"
            " flag an OOM kill inside the limit, so it was stopped externally or by the host's"
            " OOM killer.",
            code,
        )
    if code not in (0, None):
        detail = f" {state.get('Error')}." if state.get("Error") else ""
        tail = f" Last output: {log_tail.strip()}" if log_tail.strip() else ""
        return ContainerDiagnosis(
            CRASHED,
            f"Run container {short} crashed with exit code {code} {where}.{detail}{tail}",
            code,
        )
    return ContainerDiagnosis(
        EXITED,
        f"Run container {short} exited with code {code} {_steps_text(steps)} but the run did not"
        " report completion.",
        code,
    )
