"""On the real Docker launcher, every run records what its container used: the probe's peak
memory above a no-allocation run is within 5 % of what it allocated, its CPU time is plausible
for its CPUs x wall time, and the tags are on successful and failed runs alike."""

from __future__ import annotations

import time

import pytest
from dagster._core.storage.dagster_run import DagsterRunStatus

from e2i_pipelines.launcher.cgroup_usage import (
    CPU_SECONDS_TAG,
    CPU_UTILISATION_TAG,
    MEMORY_UTILISATION_TAG,
    PEAK_MEMORY_TAG,
    USAGE_SOURCE_TAG,
)
from e2i_pipelines.launcher.promotion import WORKER_EXIT_TAG
from e2i_pipelines.tiers import parse_bytes
from tests.launcher.harness import TEST_PROFILES, probe_config

MIB = 1024**2
ALLOCATE_MIB = 600
DONE = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE}


def _finished_tags(harness, run_id: str) -> dict[str, str]:
    """The run's tags once the worker wrote its exit record (usage is written before it)."""
    run = harness.wait_for(run_id, DONE)
    deadline = time.monotonic() + 120
    while WORKER_EXIT_TAG not in run.tags and time.monotonic() < deadline:
        time.sleep(0.5)
        run = harness.run(run_id)
    assert WORKER_EXIT_TAG in run.tags, harness.log_text(run_id)
    return dict(run.tags)


def test_probe_peak_and_cpu_are_recorded_on_docker_runs(harness):
    budget = parse_bytes(TEST_PROFILES["heavy"]["memory"])
    tags = {}
    for mib, fail in ((0, ""), (ALLOCATE_MIB, ""), (0, "on purpose")):
        config = probe_config("heavy", allocate_mb=mib, hold_seconds=1)
        config["ops"]["probe_heavy"]["config"]["fail_message"] = fail
        run_id = harness.launch("probe_heavy_job", config)
        tags[(mib, fail)] = _finished_tags(harness, run_id)
    base, allocated, failed = tags[(0, "")], tags[(ALLOCATE_MIB, "")], tags[(0, "on purpose")]
    for measured in (base, allocated, failed):
        assert measured[USAGE_SOURCE_TAG].startswith("memory: cgroup"), measured
        assert 0 < int(measured[PEAK_MEMORY_TAG]) < budget
        assert float(measured[MEMORY_UTILISATION_TAG]) == pytest.approx(
            int(measured[PEAK_MEMORY_TAG]) / budget, abs=1e-4)
        # a run worker and its step process import the code location: seconds of CPU, at most
        # the tier's 2 CPUs for the whole wall time
        assert float(measured[CPU_SECONDS_TAG]) > 1.0
        assert 0 < float(measured[CPU_UTILISATION_TAG]) <= 1.0
    grown = int(allocated[PEAK_MEMORY_TAG]) - int(base[PEAK_MEMORY_TAG])
    assert abs(grown - ALLOCATE_MIB * MIB) <= 0.05 * ALLOCATE_MIB * MIB, (grown / MIB, base, allocated)
