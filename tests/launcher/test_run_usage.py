"""The run worker measures what its run used: peak memory and CPU time, as run tags.

Parsing of the cgroup v1/v2 files is checked on fixture files; the real path runs the wrapper
around a program that allocates a known amount and burns a known CPU time, inside a real child
memory cgroup (and CPU cgroup on v1) of this machine, and against its own process tree.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster import instance_for_test
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from e2i_pipelines.launcher import cgroup_memory
from e2i_pipelines.launcher.cgroup_memory import CGROUP_ROOT, MemoryCgroup, own_memory_cgroup
from e2i_pipelines.launcher.cgroup_usage import (
    CPU_SECONDS_TAG,
    CPU_UTILISATION_TAG,
    MEMORY_UTILISATION_TAG,
    PEAK_MEMORY_TAG,
    USAGE_SOURCE_TAG,
    CpuCgroup,
    Usage,
    UsageMeter,
    own_cpu_cgroup,
    peak_memory_bytes,
    usage_tags,
)
from e2i_pipelines.launcher.step_inputs import STEP_INPUTS_TAG, step_inputs, step_inputs_tag
from e2i_pipelines.launcher.worker_exit import WORKER_MODULE, parse_exit_record
from e2i_pipelines.tiers import TIER_TAG
from tests.launcher.test_run_worker import _command
from tests.support.memory_cgroups import cap_memory, child_memory_cgroup

MIB = 1024**2
LIMIT = 1024 * MIB
LAUNCHER = {
    "module": "e2i_pipelines.launcher.tiered_docker_run_launcher",
    "class": "TieredDockerRunLauncher",
    "config": {"image": "e2i:local", "network": "host",
               "tiers": {"light": {"cpus": 2, "memory": "1g", "memswap": "1g"}}},
}


# -- parsing (fixture files) --------------------------------------------------------------------
def _proc(monkeypatch, tmp_path: Path, text: str) -> None:
    """Make /proc/self/cgroup read ``text``."""
    proc = tmp_path / "proc_cgroup"
    proc.write_text(text)
    real_path = cgroup_memory.Path

    def fake_path(value="", *rest):
        return proc if str(value) == "/proc/self/cgroup" else real_path(value, *rest)

    monkeypatch.setattr(cgroup_memory, "Path", fake_path)


def test_v1_files_are_read(tmp_path, monkeypatch):
    memory = tmp_path / "memory"
    memory.mkdir()
    (memory / "memory.max_usage_in_bytes").write_text("123456789\n")
    (memory / "memory.limit_in_bytes").write_text(f"{LIMIT}\n")
    (memory / "memory.oom_control").write_text("oom_kill 0\n")
    cpuacct = tmp_path / "cpuacct"
    cpuacct.mkdir()
    (cpuacct / "cpuacct.usage").write_text("2500000000\n")  # nanoseconds
    _proc(monkeypatch, tmp_path, "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n")
    assert peak_memory_bytes(MemoryCgroup(memory, 1)) == 123456789
    cpu = own_cpu_cgroup(root=tmp_path)
    assert cpu == CpuCgroup(cpuacct, 1)  # the container's own hierarchy root
    assert cpu.cpu_seconds() == 2.5


def test_v1_host_root_cpu_is_not_the_runs(tmp_path, monkeypatch):
    (tmp_path / "cpuacct").mkdir()
    (tmp_path / "cpuacct" / "cpuacct.usage").write_text("1\n")
    _proc(monkeypatch, tmp_path, "4:memory:/x\n2:cpu,cpuacct:/\n0::/\n")
    assert own_cpu_cgroup(root=tmp_path) is None


def test_v2_files_are_read(tmp_path, monkeypatch):
    group = tmp_path / "system.slice" / "docker-abc.scope"
    group.mkdir(parents=True)
    (group / "memory.peak").write_text("987654321\n")
    (group / "memory.max").write_text(f"{LIMIT}\n")
    (group / "memory.events").write_text("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n")
    (group / "cpu.stat").write_text("usage_usec 1750000\nuser_usec 1500000\nsystem_usec 250000\n")
    (tmp_path / "cpu.stat").write_text("usage_usec 99\n")  # the root: no memory.max
    _proc(monkeypatch, tmp_path, "0::/system.slice/docker-abc.scope\n")
    memory = own_memory_cgroup(root=tmp_path)
    assert memory == MemoryCgroup(group, 2) and peak_memory_bytes(memory) == 987654321
    assert own_cpu_cgroup(root=tmp_path).cpu_seconds() == 1.75
    _proc(monkeypatch, tmp_path, "0::/\n")
    assert own_cpu_cgroup(root=tmp_path) is None


def test_unreadable_files_give_none(tmp_path):
    assert peak_memory_bytes(MemoryCgroup(tmp_path, 2)) is None
    (tmp_path / "cpu.stat").write_text("user_usec 5\n")
    assert CpuCgroup(tmp_path, 2).cpu_seconds() is None
    (tmp_path / "cpuacct.usage").write_text("garbage\n")
    assert CpuCgroup(tmp_path, 1).cpu_seconds() is None


def test_usage_tags_compare_with_the_budget():
    usage = Usage(peak_bytes=512 * MIB, cpu_seconds=3.0, wall_seconds=4.0, source="s")
    tags = usage_tags(usage, cpus=2, memory_bytes=2048 * MIB)
    assert tags == {PEAK_MEMORY_TAG: str(512 * MIB), CPU_SECONDS_TAG: "3.000",
                    MEMORY_UTILISATION_TAG: "0.2500", CPU_UTILISATION_TAG: "0.3750",
                    USAGE_SOURCE_TAG: "s"}
    unbudgeted = usage_tags(usage, cpus=None, memory_bytes=None)
    assert MEMORY_UTILISATION_TAG not in unbudgeted and CPU_UTILISATION_TAG not in unbudgeted


def test_meter_ignores_an_unlimited_memory_cgroup(tmp_path):
    (tmp_path / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (tmp_path / "memory.max_usage_in_bytes").write_text("1\n")
    meter = UsageMeter(MemoryCgroup(tmp_path, 1), None)
    assert meter.memory is None  # shared by everything on the host: not the run's
    assert meter.read(1.0).source == "memory: rusage, cpu: rusage"


# -- the real path ------------------------------------------------------------------------------
@pytest.fixture()
def instance(tmp_path):
    with instance_for_test(temp_dir=str(tmp_path), overrides={"run_launcher": LAUNCHER}) as inst:
        yield inst


@contextlib.contextmanager
def run_cgroups() -> Iterator[tuple[object, int]]:
    """A new memory cgroup capped at LIMIT (and, on v1, a new cpuacct cgroup); yields a
    ``preexec_fn`` entering both and the cgroup version."""
    name = f"e2i-usage-{uuid.uuid4().hex[:6]}"
    memory, version = child_memory_cgroup(name)
    cap_memory(memory, version, LIMIT)
    cpu = CGROUP_ROOT / "cpuacct" / name if version == 1 else None
    if cpu is not None:
        cpu.mkdir()

    def enter() -> None:
        for group in (memory, cpu):
            if group is not None:
                (group / "cgroup.procs").write_text(str(os.getpid()))

    try:
        yield enter, version
    finally:
        for group in (memory, cpu):
            if group is not None:
                group.rmdir()


def _program(tmp_path: Path, allocate_mib: int, cpu_seconds: float) -> str:
    """A stand-in for ``dagster``: allocate (and touch) ``allocate_mib``, burn ``cpu_seconds``."""
    script = tmp_path / f"dagster-{allocate_mib}"
    code = ("import time, numpy as np\n"
            f"a = np.ones({allocate_mib} * 2**20 // 8)\n"
            f"while time.process_time() < {cpu_seconds}:\n    pass\n"
            "print(a.sum())\n")
    (tmp_path / f"prog-{allocate_mib}.py").write_text(code)
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {tmp_path / f'prog-{allocate_mib}.py'}\n")
    script.chmod(0o755)
    return str(script)


def _wrapped(instance, tmp_path: Path, allocate_mib: int, cpu_seconds: float, preexec=None) -> tuple[dict, dict]:
    """Run the wrapper around the stand-in for a new run; (exit record, the run's tags)."""
    run = create_run_for_test(instance, job_name="probe_light_job", status=DagsterRunStatus.SUCCESS,
                              tags={TIER_TAG: "light"})
    done = subprocess.run([sys.executable, "-m", WORKER_MODULE,
                           *_command(instance, run.run_id, _program(tmp_path, allocate_mib, cpu_seconds))],
                          capture_output=True, text=True, timeout=180, preexec_fn=preexec)
    assert done.returncode == 0, done.stdout + done.stderr
    return parse_exit_record(done.stdout), instance.get_run_by_id(run.run_id).tags


def _warm_page_cache() -> None:
    """Load Python and numpy once outside the test cgroups, so their files are already cached."""
    subprocess.run([sys.executable, "-c", "import numpy"], check=True, timeout=60)


def test_peak_and_cpu_of_a_run_in_its_own_cgroup(instance, tmp_path):
    """Peak within 5 % of the allocation (above a no-allocation baseline); CPU time of a busy
    loop of known CPU length; both recorded on the run with their utilisation of the budget."""
    _warm_page_cache()
    results = {}
    for mib in (0, 600):
        with run_cgroups() as (enter, version):
            results[mib] = _wrapped(instance, tmp_path, mib, cpu_seconds=1.5, preexec=enter)
    (base, _), (record, tags) = results[0], results[600]
    assert record["usage_source"] == f"memory: cgroup v{version}, cpu: cgroup v{version}"
    allocated = record["peak_memory_bytes"] - base["peak_memory_bytes"]
    assert abs(allocated - 600 * MIB) <= 0.05 * 600 * MIB, (allocated / MIB, base, record)
    assert 1.5 <= record["cpu_seconds"] <= 1.5 + 1.0, record  # + interpreter and numpy start
    assert tags[PEAK_MEMORY_TAG] == str(record["peak_memory_bytes"])
    assert float(tags[CPU_SECONDS_TAG]) == pytest.approx(record["cpu_seconds"], abs=1e-3)
    assert float(tags[MEMORY_UTILISATION_TAG]) == pytest.approx(record["peak_memory_bytes"] / LIMIT, abs=1e-4)
    assert float(tags[CPU_UTILISATION_TAG]) == pytest.approx(
        record["cpu_seconds"] / (2 * record["wall_seconds"]), rel=0.01)
    assert "e2i/worker_exit" in tags


def test_without_a_run_cgroup_the_process_tree_is_measured(instance, tmp_path):
    """A memory cgroup without a limit (a bare host's slice, shared): peak RSS and CPU time of
    the waited-for process tree instead."""
    _warm_page_cache()
    path, _ = child_memory_cgroup(f"e2i-usage-{uuid.uuid4().hex[:6]}")  # no limit
    try:
        def enter() -> None:
            (path / "cgroup.procs").write_text(str(os.getpid()))

        base, _ = _wrapped(instance, tmp_path, 0, cpu_seconds=0.5, preexec=enter)
        record, tags = _wrapped(instance, tmp_path, 400, cpu_seconds=1.0, preexec=enter)
    finally:
        path.rmdir()
    assert record["usage_source"].startswith("memory: rusage")
    allocated = record["peak_memory_bytes"] - base["peak_memory_bytes"]
    assert abs(allocated - 400 * MIB) <= 0.05 * 400 * MIB, (allocated / MIB, base, record)
    assert 1.0 <= record["cpu_seconds"] <= 2.0, record
    assert float(tags[MEMORY_UTILISATION_TAG]) == pytest.approx(record["peak_memory_bytes"] / LIMIT, abs=1e-4)


# -- step input sizes (from the assets' metadata in the event log) ----------------------------
def test_step_inputs_from_materialization_metadata(tmp_path):
    @dg.asset
    def dataset() -> dg.MaterializeResult:
        schema = dg.TableSchema(columns=[dg.TableColumn(c) for c in ("id", "t", "y")])
        return dg.MaterializeResult(metadata={"rows": 12_345, "schema": dg.MetadataValue.table_schema(schema)})

    @dg.asset(deps=[dataset])
    def twins() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"n_twins": 500, "rows": -1, "columns": "many"})

    @dg.asset(deps=[twins])
    def other() -> None:
        return None

    with instance_for_test(temp_dir=str(tmp_path)) as inst:
        result = dg.materialize([dataset, twins, other], instance=inst)
        steps = step_inputs(inst, result.run_id)
    assert {k: {s: v for s, v in d.items() if s != "wall_seconds"} for k, d in steps.items()} == {
        "dataset": {"rows": 12_345, "columns": 3}, "twins": {"twins": 500}, "other": {}}
    assert all(0 <= d["wall_seconds"] < 60 for d in steps.values())
    tag = step_inputs_tag(steps)[STEP_INPUTS_TAG]
    assert '"dataset": {"columns": 3, "rows": 12345' in tag
    assert step_inputs_tag({f"step_{i:03}": {"rows": i} for i in range(1000)})[STEP_INPUTS_TAG].count("step_") < 1000
