"""Why a run container stopped: OOM kill, crash, SIGKILL or vanished, as a readable reason.

Input is Docker's ``State`` dict (``docker inspect``) and the run's step events; output is a
:class:`ContainerDiagnosis` whose ``message`` goes on the run (tag + engine event + failure).
A Kubernetes run pod is first converted to the same ``State`` dict by :func:`pod_state`.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import DagsterEventType, EventLogEntry

from e2i_pipelines.launcher.worker_exit import OOM_EXIT_CODE, shell_exit_code

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
    container_id: str = "", log_tail: str = "", worker: str = "Run container",
) -> ContainerDiagnosis:
    """Classify a stopped run worker from its Docker-style ``State`` (``OOMKilled``,
    ``ExitCode``, ``Error``); ``worker`` names it in the message ("Run container", "Ray job")."""
    short = container_id[:12] if worker == "Run container" else container_id
    if state is None:
        return ContainerDiagnosis(
            MISSING,
            f"{worker} {short} disappeared (removed or never created) {_steps_text(steps)}"
            f" at tier {tier}; the run worker cannot report its result.",
        )
    code = state.get("ExitCode")
    where = f"at tier {tier} (memory limit {memory}) {_steps_text(steps)}"
    if state.get("OOMKilled"):
        return ContainerDiagnosis(
            OOM, f"{worker} {short} was OOM-killed {where} (exit code {code}).", code
        )
    if code == OOM_EXIT_CODE:
        return ContainerDiagnosis(
            KILLED,
            f"{worker} {short} was killed by SIGKILL (exit code {OOM_EXIT_CODE}) {where}; no OOM kill"
            " was recorded inside its memory limit, so it was stopped externally or by the host's"
            " OOM killer.",
            code,
        )
    if code not in (0, None):
        detail = f" {state.get('Error')}." if state.get("Error") else ""
        tail = f" Last output: {log_tail.strip()}" if log_tail.strip() else ""
        return ContainerDiagnosis(
            CRASHED,
            f"{worker} {short} crashed with exit code {code} {where}.{detail}{tail}",
            code,
        )
    return ContainerDiagnosis(
        EXITED,
        f"{worker} {short} exited with code {code} {_steps_text(steps)} but the run did not"
        " report completion.",
        code,
    )


def exit_record_state(record: Mapping[str, Any], exit_code: int | None = None,
                      error: str = "") -> dict[str, Any]:
    """Docker-style ``State`` (for :func:`diagnose_state`) of a run-worker exit record
    (:mod:`e2i_pipelines.launcher.run_worker`): OOM when the worker's memory cgroup counted an
    OOM kill, the exit code as a shell reports it (128 + signal); ``exit_code``/``error`` fill in
    when there is no record (``{}``)."""
    code = record.get("exit_code", exit_code)
    if isinstance(code, int) and code < 0:
        code = shell_exit_code(code)
    if record.get("oom_kills"):
        code = OOM_EXIT_CODE  # what the wrapper exits with: a step process may be the one killed
    return {"OOMKilled": bool(record.get("oom_kills")), "ExitCode": code,
            "Error": "" if record else error}


_PLAIN_REASONS = {"OOMKilled", "Error", "Completed"}
"""Kubernetes termination reasons that say nothing beyond the exit code / OOM flag."""


def pod_state(pod: Any, container: str | None = None) -> dict[str, Any] | None:
    """Docker-style ``State`` of a Kubernetes run pod's worker container (for diagnose_state).

    ``pod`` is a kubernetes ``V1Pod`` (None: the pod no longer exists -> None); ``container``
    names the worker container (default: the pod's first). A worker that has not terminated
    (pod pending, container waiting or running) gives ``Running: True``; a terminated one gives
    ``OOMKilled`` (reason ``OOMKilled``), ``ExitCode`` and ``Error`` (its message or an unusual
    reason such as ``ContainerCannotRun``).
    """
    if pod is None:
        return None
    status = pod.status
    name = container or (pod.spec.containers[0].name if pod.spec and pod.spec.containers else None)
    statuses = list((status.container_statuses if status else None) or [])
    worker = next((s for s in statuses if s.name == name), statuses[0] if statuses else None)
    terminated = worker.state.terminated if worker is not None and worker.state else None
    if terminated is None:
        if status is not None and status.phase in ("Failed", "Succeeded"):
            detail = ": ".join(part for part in (status.reason, status.message) if part)
            return {"Status": "exited", "Running": False, "OOMKilled": False, "ExitCode": None,
                    "Error": detail}
        return {"Status": "running", "Running": True, "OOMKilled": False, "ExitCode": None,
                "Error": ""}
    reason = terminated.reason or ""
    return {
        "Status": "exited",
        "Running": False,
        "OOMKilled": reason == "OOMKilled",
        "ExitCode": terminated.exit_code,
        "Error": terminated.message or ("" if reason in _PLAIN_REASONS else reason),
    }
