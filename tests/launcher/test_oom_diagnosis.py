"""Container end diagnosis and the step that was running (no Docker)."""

from types import SimpleNamespace

from dagster import DagsterEventType

from e2i_pipelines.launcher.oom import (
    CRASHED,
    EXITED,
    KILLED,
    MISSING,
    OOM,
    diagnose_state,
    unfinished_steps,
)


def _event(kind: DagsterEventType, step: str) -> SimpleNamespace:
    """The two fields of an EventLogEntry that step tracking reads."""
    return SimpleNamespace(dagster_event=SimpleNamespace(event_type=kind, step_key=step))


def test_unfinished_steps():
    events = [
        _event(DagsterEventType.STEP_START, "a"),
        _event(DagsterEventType.STEP_SUCCESS, "a"),
        _event(DagsterEventType.STEP_START, "b"),
        _event(DagsterEventType.STEP_START, "c"),
        _event(DagsterEventType.STEP_FAILURE, "c"),
    ]
    assert unfinished_steps(events) == ["b"]
    assert unfinished_steps(events, include_failed=True) == ["b", "c"]


def test_oom_message_names_tier_limit_and_step():
    diagnosis = diagnose_state(
        {"OOMKilled": True, "ExitCode": 137}, tier="light", memory="256m", steps=["probe_light"],
        container_id="0123456789abcdef",
    )
    assert diagnosis.kind == OOM and diagnosis.exit_code == 137 and diagnosis.is_failure
    assert diagnosis.message == (
        "Run container 0123456789ab was OOM-killed at tier light (memory limit 256m)"
        " while running step probe_light (exit code 137)."
    )


def test_other_ends():
    kwargs = {"tier": "medium", "memory": "8g", "steps": []}
    assert diagnose_state({"OOMKilled": False, "ExitCode": 137}, **kwargs).kind == KILLED
    crash = diagnose_state({"ExitCode": 3, "Error": ""}, log_tail="Traceback: boom\n", **kwargs)
    assert crash.kind == CRASHED and "exit code 3" in crash.message and "boom" in crash.message
    assert "before any step started" in crash.message
    missing = diagnose_state(None, **kwargs)
    assert missing.kind == MISSING and "disappeared" in missing.message
    clean = diagnose_state({"ExitCode": 0}, **kwargs)
    assert clean.kind == EXITED and not clean.is_failure
