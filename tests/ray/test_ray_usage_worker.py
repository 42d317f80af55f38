"""The Ray job's wrapper (:mod:`e2i_pipelines.launcher.ray_worker`) on this machine's real cgroups,
without a cluster: the run's own cgroup measures what it allocated, caps it at its tier, counts
its OOM kill and is removed afterwards; a malformed ``--memory`` runs nothing; without a cgroup
v1 memory hierarchy the wrapper says so and measures as the run worker does anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from e2i_pipelines.launcher.cgroup_memory import own_memory_cgroup
from e2i_pipelines.launcher.ray_worker import (
    RAY_WORKER_MODULE,
    SCOPE_NODE,
    SCOPE_RUN,
    enter_run_cgroup,
    parse_argv,
    ray_worker_argv,
)
from e2i_pipelines.launcher.worker_exit import parse_exit_record
from tests.conftest import require

MIB = 2**20


def _wrapped(memory: int | None, allocate_mib: int) -> tuple[subprocess.CompletedProcess, dict]:
    """Run a Python that touches ``allocate_mib`` MiB under the wrapper; (process, exit record)."""
    code = f"x = bytearray({allocate_mib} * 2**20); x[::4096] = b'1' * len(x[::4096])"
    argv = ray_worker_argv(sys.executable, [sys.executable, "-c", code], memory)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    record = parse_exit_record(done.stdout)
    assert record is not None, done.stdout + done.stderr
    return done, record


def _v1_memory() -> bool:
    own = own_memory_cgroup()
    return own is not None and own.version == 1 and (own.path / "cgroup.procs").exists()


def test_run_cgroup_measures_the_allocation_and_is_removed():
    require(_v1_memory(), "a writable cgroup v1 memory hierarchy")
    cap = 400 * MIB
    (_, base), (done, grown) = _wrapped(cap, 0), _wrapped(cap, 200)
    assert f"usage measured in {SCOPE_RUN} v1" in done.stdout
    for record in (base, grown):
        assert record["exit_code"] == 0 and record["oom_kills"] == 0
        assert record["memory_limit_bytes"] == cap
        assert record["usage_source"] == "memory: cgroup v1, cpu: cgroup v1"
        assert not Path(record["cgroup"]).exists()  # removed when the run ended
        assert Path(record["cgroup"]).parent == own_memory_cgroup().path
    delta = grown["peak_memory_bytes"] - base["peak_memory_bytes"]
    assert abs(delta - 200 * MIB) <= 0.05 * 200 * MIB, delta / MIB


def test_run_over_its_tier_is_oom_killed_in_its_own_cgroup():
    require(_v1_memory(), "a writable cgroup v1 memory hierarchy")
    done, record = _wrapped(150 * MIB, 300)
    assert done.returncode == 137 and record["oom_kills"] == 1, done.stdout
    assert record["peak_memory_bytes"] <= 150 * MIB
    assert not Path(record["cgroup"]).exists()


@pytest.mark.parametrize("bad", [["--memory"], ["--memory", "1e9"], ["--memory", "-5"],
                                 ["--memory", "0"], ["--memory", "5; touch x"],
                                 ["--memory", "٣٠٠"], ["--memory", str(1 << 61)]])
def test_malformed_memory_is_refused_before_anything_runs(bad, tmp_path):
    with pytest.raises(ValueError, match="--memory: expected a positive number of bytes"):
        parse_argv([*bad, "true"])
    marker = tmp_path / "ran"
    done = subprocess.run([sys.executable, "-m", RAY_WORKER_MODULE, *bad, "touch", str(marker)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--memory: expected a positive number of bytes" in done.stderr
    assert not marker.exists()


def test_without_a_v1_memory_hierarchy_the_node_scope_is_named(tmp_path):
    assert parse_argv(["--memory", "1024", "dagster", "api"]) == (1024, ["dagster", "api"])
    assert parse_argv(["dagster", "api"]) == (None, ["dagster", "api"])
    cgroup, why = enter_run_cgroup(1024, root=tmp_path)  # an empty "/sys/fs/cgroup"
    assert cgroup is None and "no cgroup v1 memory hierarchy" in why
    assert SCOPE_NODE.startswith("node")
