"""The run-worker wrapper records its own end on the run: OOM kills counted in its memory cgroup
become ``e2i/failure=oom`` through the launcher's diagnosis, then ``e2i/worker_exit``; the OOM
promotion sensor waits for that record instead of inspecting the worker.

The OOM case is real: the wrapper's child is OOM-killed by the kernel inside a 160 MiB memory
cgroup and the wrapper writes to a real (SQLite) instance whose launcher is the Docker one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterEventType, instance_for_test
from dagster._cli.api import ExecuteRunArgs  # type: ignore[attr-defined]
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.test_utils import create_run_for_test
from dagster._serdes import serialize_value

from e2i_pipelines.defs.launcher.sensors import WORKER_RECORD_GRACE_SECONDS, awaiting_worker_record
from e2i_pipelines.launcher.promotion import (
    FAILURE_REASON_TAG,
    FAILURE_TAG,
    WORKER_EXIT_TAG,
    decide_promotion,
)
from e2i_pipelines.launcher.run_worker import run_args
from e2i_pipelines.launcher.worker_exit import EXIT_MARKER, WORKER_MODULE, parse_exit_record
from e2i_pipelines.tiers import TIER_TAG
from tests.launcher.memory_cgroup import limited_memory_cgroup

LAUNCHER = {
    "module": "e2i_pipelines.launcher.tiered_docker_run_launcher",
    "class": "TieredDockerRunLauncher",
    "config": {"image": "e2i:local", "network": "host",
               "tiers": {"light": {"memory": "160m", "memswap": "160m"}}},
}


@pytest.fixture()
def instance(tmp_path):
    with instance_for_test(temp_dir=str(tmp_path), overrides={"run_launcher": LAUNCHER}) as inst:
        yield inst


def _command(instance, run_id: str, program: str) -> list[str]:
    origin = JobPythonOrigin("probe_light_job", RepositoryPythonOrigin(
        sys.executable, ModuleCodePointer("e2i_pipelines.definitions", "defs", None)))
    args = ExecuteRunArgs(job_origin=origin, run_id=run_id, instance_ref=instance.get_ref(),
                          set_exit_code_on_failure=True)
    return [program, "api", "execute_run", serialize_value(args)]


def test_run_args_are_read_from_the_dagster_command(instance):
    command = _command(instance, "abc", "dagster")
    assert run_args(command).run_id == "abc"
    assert run_args(["python", "-c", "print(1)"]) is None
    assert run_args(["dagster", "api", "grpc", "{}"]) is None


def test_step_oom_of_a_failed_run_is_recorded_with_the_launchers_diagnosis(instance):
    """Multiprocess executor: the step process was killed, the run worker failed the run and
    exited 1; the cgroup counted an OOM kill."""
    run = create_run_for_test(instance, job_name="probe_light_job", status=DagsterRunStatus.FAILURE,
                              tags={TIER_TAG: "light", "docker/container_id": "0123456789abcdef"})
    diagnosis = instance.run_launcher.record_worker_exit(run, {"exit_code": 1, "oom_kills": 1})
    tags = instance.get_run_by_id(run.run_id).tags
    assert diagnosis.kind == "oom" and tags[FAILURE_TAG] == "oom"
    assert tags[FAILURE_REASON_TAG].startswith(
        "Run container 0123456789ab was OOM-killed at tier light (memory limit 160m)")
    assert json.loads(tags[WORKER_EXIT_TAG]) == {"exit_code": 1, "oom_kills": 1, "signal": None}
    assert decide_promotion(tags, True).tier.value == "medium"
    engine = [e.message for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)]
    assert any("OOM-killed" in m for m in engine)


def test_ordinary_failure_and_success_record_only_the_exit(instance):
    failed = create_run_for_test(instance, job_name="probe_light_job", status=DagsterRunStatus.FAILURE)
    assert instance.run_launcher.record_worker_exit(failed, {"exit_code": 1, "oom_kills": 0}) is None
    ok = create_run_for_test(instance, job_name="probe_light_job", status=DagsterRunStatus.SUCCESS)
    assert instance.run_launcher.record_worker_exit(ok, {"exit_code": 0, "oom_kills": 1}) is None
    for run in (failed, ok):
        tags = instance.get_run_by_id(run.run_id).tags
        assert FAILURE_TAG not in tags and WORKER_EXIT_TAG in tags


def test_sensor_waits_for_the_worker_record_for_a_while(instance):
    run = create_run_for_test(instance, job_name="probe_light_job", status=DagsterRunStatus.FAILURE)
    assert awaiting_worker_record(run, failed_at=100.0, now=101.0)
    assert not awaiting_worker_record(run, failed_at=100.0, now=100.0 + WORKER_RECORD_GRACE_SECONDS)
    instance.add_run_tags(run.run_id, {WORKER_EXIT_TAG: "{}"})
    assert not awaiting_worker_record(instance.get_run_by_id(run.run_id), failed_at=100.0, now=101.0)


def test_wrapper_records_a_kernel_oom_kill_on_the_run(instance, tmp_path):
    """The whole run worker is OOM-killed (in-process executor): the wrapper survives, fails the
    run with the diagnosis and tags it, before anyone inspects the container."""
    run = create_run_for_test(instance, job_name="probe_light_job", status=DagsterRunStatus.STARTED,
                              tags={TIER_TAG: "light", "docker/container_id": "feedfacecafe0000"})
    fake_dagster = Path(tmp_path) / "dagster"
    fake_dagster.write_text(f"#!/bin/sh\nexec {sys.executable} -c "
                            "'import numpy as np; a = np.ones(400 * 2**20 // 8); print(a.sum())'\n")
    fake_dagster.chmod(0o755)
    with limited_memory_cgroup(160 * 1024**2) as enter:
        done = subprocess.run([sys.executable, "-m", WORKER_MODULE,
                               *_command(instance, run.run_id, str(fake_dagster))],
                              capture_output=True, text=True, timeout=180, preexec_fn=enter)
    assert done.returncode == 137, done.stdout + done.stderr
    assert parse_exit_record(done.stdout)["oom_kills"] == 1
    assert EXIT_MARKER in done.stdout and "e2i run worker: Run container feedfacecafe was OOM-killed" in done.stdout
    stored = instance.get_run_by_id(run.run_id)
    assert stored.status == DagsterRunStatus.FAILURE
    assert stored.tags[FAILURE_TAG] == "oom" and WORKER_EXIT_TAG in stored.tags
    [failure] = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
    assert "was OOM-killed at tier light (memory limit 160m) before any step started" in failure.message
