"""The Ray run-worker wrapper and what the Ray launcher makes of its record, without a cluster.

The wrapper runs for real: a child that exits, one killed by SIGKILL, and one OOM-killed by the
kernel inside a memory cgroup of 160 MiB. The launcher's diagnosis is fed recorded Ray job
details and logs (the cluster tests in tests/ray run the same path end to end).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from types import SimpleNamespace

import pytest
from dagster import instance_for_test
from dagster._core.test_utils import create_run_for_test

from e2i_pipelines.launcher.cgroup_memory import MemoryCgroup, own_memory_cgroup
from e2i_pipelines.launcher.promotion import FAILURE_TAG, RAY_JOB_TAG, decide_promotion
from e2i_pipelines.launcher.worker_exit import EXIT_MARKER, parse_exit_record
from e2i_pipelines.tiers import TIER_TAG
from tests.launcher.memory_cgroup import limited_memory_cgroup

WRAPPER = [sys.executable, "-m", "e2i_pipelines.launcher.run_worker"]


def _wrap(code: str, preexec=None) -> tuple[int, dict]:
    done = subprocess.run([*WRAPPER, sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, preexec_fn=preexec)
    record = parse_exit_record(done.stdout)
    assert record is not None, done.stdout + done.stderr
    return done.returncode, record


def test_wrapper_passes_the_exit_code_and_reports_it():
    code, record = _wrap("import sys; sys.exit(3)")
    assert code == 3 and record["exit_code"] == 3 and record["signal"] is None
    assert record["oom_kills"] == 0


def test_wrapper_reports_a_sigkill_as_137():
    code, record = _wrap("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert code == 137 and record["signal"] == 9 and record["oom_kills"] == 0


def test_child_runs_with_the_highest_oom_score():
    done = subprocess.run([*WRAPPER, "cat", "/proc/self/oom_score_adj"], capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.splitlines()[0].strip() == "1000"


def test_kernel_oom_kill_in_the_nodes_cgroup_is_reported(tmp_path):
    limit = 160 * 1024**2
    with limited_memory_cgroup(limit) as enter:
        code, record = _wrap("import numpy as np; a = np.ones(400 * 2**20 // 8); print(a.sum())",
                             preexec=enter)
    assert record["oom_kills"] == 1 and record["signal"] == 9, record
    assert code == 137
    assert record["memory_limit_bytes"] == limit


def test_memory_cgroup_files_v1_and_v2(tmp_path):
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n")
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert MemoryCgroup(v1, 1).oom_kills() == 4 and MemoryCgroup(v1, 1).limit_bytes() is None
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\n")
    (v2 / "memory.max").write_text("1073741824\n")
    assert MemoryCgroup(v2, 2).oom_kills() == 2 and MemoryCgroup(v2, 2).limit_bytes() == 2**30
    assert MemoryCgroup(tmp_path / "gone", 2).oom_kills() is None


def test_exit_record_is_the_last_marker_line():
    log = (f"{EXIT_MARKER} {json.dumps({'exit_code': 1})}\nnoise\n"
           f"{EXIT_MARKER} {json.dumps({'exit_code': 137, 'oom_kills': 1})}\n")
    assert parse_exit_record(log) == {"exit_code": 137, "oom_kills": 1}
    assert parse_exit_record("no marker here") is None


# -- the launcher's diagnosis of recorded job details -------------------------------------------
class _RecordedJobs:
    """Stands in for ray.job_submission.JobSubmissionClient with one recorded job."""

    def __init__(self, status: str, logs: str = "", exit_code: int | None = None,
                 message: str = "", missing: bool = False) -> None:
        self.info = SimpleNamespace(status=status, driver_exit_code=exit_code, message=message,
                                    driver_node_id=None)
        self.logs, self.missing = logs, missing

    def get_job_info(self, submission_id: str):
        if self.missing:
            raise RuntimeError(f"Request failed with status code 404: Job {submission_id} does not exist.")
        return self.info

    def get_job_logs(self, submission_id: str) -> str:
        return self.logs


@pytest.fixture()
def ray_launcher(tmp_path):
    from e2i_pipelines.launcher.tiered_ray_run_launcher import TieredRayRunLauncher

    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        launcher = TieredRayRunLauncher(address="http://127.0.0.1:1",
                                        tiers={"medium": {"memory": "768m", "memswap": "768m"}})
        launcher.register_instance(instance)
        yield launcher, instance


def _diagnose(ray_launcher, jobs: _RecordedJobs):
    launcher, instance = ray_launcher
    launcher.__dict__["client"] = jobs  # the cached JobSubmissionClient
    run = create_run_for_test(instance, job_name="probe_medium_job",
                              tags={TIER_TAG: "medium", RAY_JOB_TAG: "dagster-run-x"})
    return launcher, instance, run, launcher.diagnose(run)


def test_oom_record_is_diagnosed_like_a_container_oom_and_promoted(ray_launcher):
    record = {"exit_code": -9, "signal": 9, "oom_kills": 1, "memory_limit_bytes": 1}
    logs = f"step output\n{EXIT_MARKER} {json.dumps(record)}\n"
    launcher, instance, run, diagnosis = _diagnose(ray_launcher, _RecordedJobs("FAILED", logs, 137))
    assert diagnosis.kind == "oom" and diagnosis.exit_code == 137
    assert diagnosis.message.startswith("Ray job dagster-run-x was OOM-killed at tier medium "
                                        "(memory limit 768m) before any step started")
    launcher.record_failure(run, diagnosis)
    tags = instance.get_run_by_id(run.run_id).tags
    assert tags[FAILURE_TAG] == "oom"
    assert decide_promotion(tags, True).tier.value == "heavy"


def test_running_job_is_alive_and_failures_are_told_apart(ray_launcher):
    assert _diagnose(ray_launcher, _RecordedJobs("RUNNING"))[3] is None
    crash = f"Traceback ...\nValueError: boom\n{EXIT_MARKER} {json.dumps({'exit_code': 1})}\n"
    diagnosis = _diagnose(ray_launcher, _RecordedJobs("FAILED", crash, 1))[3]
    assert diagnosis.kind == "crashed" and "ValueError: boom" in diagnosis.message
    killed = f"{EXIT_MARKER} {json.dumps({'exit_code': -9, 'signal': 9, 'oom_kills': 0})}\n"
    assert _diagnose(ray_launcher, _RecordedJobs("STOPPED", killed))[3].kind == "killed"
    # The wrapper itself died (no record): the job's own exit code and message are used.
    bare = _diagnose(ray_launcher, _RecordedJobs("FAILED", "", 2, "entrypoint failed"))[3]
    assert bare.kind == "crashed" and "entrypoint failed" in bare.message
    gone = _diagnose(ray_launcher, _RecordedJobs("FAILED", missing=True))[3]
    assert gone.kind == "container_missing" and "Ray job dagster-run-x disappeared" in gone.message


def test_job_request_sizes_the_run_by_its_tier(ray_launcher):
    launcher, instance = ray_launcher
    run = create_run_for_test(instance, job_name="probe_medium_job", tags={TIER_TAG: "medium"})
    assert launcher.job_request(run) == {"entrypoint_num_cpus": 4.0,
                                         "entrypoint_memory": 768 * 1024**2,
                                         "entrypoint_resources": {"e2i-medium": 1}}
    entry = launcher.run_entrypoint(run, ["dagster", "api", "execute_run", '{"x": "it\'s"}'])
    assert entry.startswith(  # the run's own cgroup on the node, capped at its tier's memory
        f"python -m e2i_pipelines.launcher.ray_worker --memory {768 * 1024**2} dagster api execute_run ")
    assert shlex.split(entry)[-1] == '{"x": "it\'s"}'  # the JSON survives the job's shell


def test_container_view_falls_back_to_the_hierarchy_root(tmp_path, monkeypatch):
    """In a container /proc/self/cgroup names the host path; the cgroup is mounted at the root."""
    from e2i_pipelines.launcher import cgroup_memory

    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.oom_control").write_text("oom_kill 3\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("4:memory:/docker/abc123\n0::/\n")
    real_path = cgroup_memory.Path

    def fake_path(value="", *rest):
        return proc if str(value) == "/proc/self/cgroup" else real_path(value, *rest)

    monkeypatch.setattr(cgroup_memory, "Path", fake_path)
    found = own_memory_cgroup(root=tmp_path)
    assert found == MemoryCgroup(tmp_path / "memory", 1) and found.oom_kills() == 3
