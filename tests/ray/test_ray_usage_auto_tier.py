"""Issue 29 on the real Ray cluster (tests/ray/conftest.py): what a Ray run used, and ``tier: auto``.

Each run's job wraps its worker in a cgroup of its own below its node's
(:mod:`e2i_pipelines.launcher.ray_worker`, cgroup v1 on this machine), capped at its tier, so the
recorded peak is the run's: a probe allocating a known amount peaks that much above one that
allocates nothing, within 5 %. ``tier: auto`` on Ray: with no history a run lands on its
declared tier's node; after three small runs of the same steps a small input lands on the light
node and a large one on a heavy node.

One instance for the module: a fresh Postgres database (over the Unix socket), the Ray launcher
with the suite's tiers (light 512m, medium 768m, heavy 1280m), runs launched at once by the
default run coordinator (no daemon: nothing here needs the queue or the sensors). The probe run
declares ``e2i/input_size`` = MiB x 1000 rows and allocates that many MiB.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterRunStatus

from e2i_pipelines.launcher.cgroup_memory import own_memory_cgroup
from e2i_pipelines.launcher.cgroup_usage import (
    CPU_SECONDS_TAG,
    CPU_UTILISATION_TAG,
    MEMORY_UTILISATION_TAG,
    PEAK_MEMORY_TAG,
    USAGE_SOURCE_TAG,
)
from e2i_pipelines.launcher.promotion import (
    RAY_JOB_TAG,
    RAY_NODE_TAG,
    TIER_SOURCE_TAG,
    WORKER_EXIT_TAG,
)
from e2i_pipelines.launcher.ray_worker import SCOPE_NODE, SCOPE_RUN, USAGE_SCOPE_TAG
from e2i_pipelines.launcher.sizing import INPUT_SIZE_TAG, PREDICTED_PEAK_TAG, TIER_BASIS_TAG
from e2i_pipelines.launcher.worker_exit import parse_exit_record
from e2i_pipelines.tiers import TIER_TAG, parse_bytes
from tests.conftest import PG_PASSWORD, fresh_database
from tests.launcher.harness import IN_PROCESS, LauncherHarness, probe_config
from tests.ray.conftest import PG_PASSWORD_ENV, RAY_PROFILES
from tests.support.dagster_processes import REPO_ROOT, postgres_storage

pytestmark = [pytest.mark.ray, pytest.mark.postgres]
MIB = 2**20
AUTO = {TIER_TAG: "auto"}
DONE = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
ALLOCATE_MIB = 300
"""What the usage probe allocates on the medium node (768m): ~250 MiB of run worker below it."""


@pytest.fixture(scope="module")
def ray_harness(ray_cluster, tmp_path_factory) -> Iterator[LauncherHarness]:
    tmp = tmp_path_factory.mktemp("ray_usage")
    workspace = tmp / "workspace.yaml"
    workspace.write_text(json.dumps({"load_from": [{"python_module": {
        "module_name": "tests.ray.ray_location", "location_name": "e2i",
        "working_directory": str(REPO_ROOT)}}]}))
    launcher = {"module": "e2i_pipelines.launcher.tiered_ray_run_launcher",
                "class": "TieredRayRunLauncher",
                "config": {"ray": {"address": ray_cluster.dashboard_url},
                           "auth_token_path": str(ray_cluster.token_path), "tiers": RAY_PROFILES}}
    with fresh_database() as db, pytest.MonkeyPatch.context() as env:
        env.setenv(PG_PASSWORD_ENV, PG_PASSWORD)  # this process; the nodes read their 0600 file
        storage = postgres_storage(db)
        storage["postgres"]["postgres_db"]["password"] = {"env": PG_PASSWORD_ENV}
        harness = LauncherHarness(tmp / "home", db, workspace=workspace,
                                  sections={"run_launcher": launcher, "storage": storage})
        try:
            yield harness
        finally:
            harness.close()


def probe(harness: LauncherHarness, tier: str, mib: int, tags: dict[str, str],
          allocate: int | None = None) -> str:
    """Launch ``probe_<tier>_job`` declaring ``mib`` x 1000 rows, allocating ``allocate`` MiB
    (default ``mib``), in process (one import of the code location)."""
    config = {**probe_config(tier, allocate_mb=mib if allocate is None else allocate,
                             hold_seconds=1), **IN_PROCESS}
    return harness.launch(f"probe_{tier}_job", config, tags={INPUT_SIZE_TAG: f"{mib * 1000}x1", **tags})


def finished(harness: LauncherHarness, run_id: str):
    """The run once its Ray wrapper is done: usage, exit record, then the usage scope on it."""
    run = harness.wait_for(run_id, DONE, timeout=240)
    deadline = time.monotonic() + 120
    while not {WORKER_EXIT_TAG, USAGE_SCOPE_TAG} <= set(run.tags) and time.monotonic() < deadline:
        time.sleep(0.5)
        run = harness.run(run_id)
    assert {WORKER_EXIT_TAG, USAGE_SCOPE_TAG} <= set(run.tags), harness.log_text(run_id)
    assert run.status == DagsterRunStatus.SUCCESS, harness.log_text(run_id)
    return run


def assert_job_on_tier(harness: LauncherHarness, run, tier: str) -> dict:
    """The run's Ray job asked for ``tier``'s resource with its cgroup capped at the tier's memory
    and ran on a node of that tier; returns the worker's exit record from the job's log."""
    launcher = harness.instance.run_launcher
    memory = parse_bytes(RAY_PROFILES[tier]["memory"])
    assert run.tags[TIER_TAG] == tier, run.tags.get(TIER_BASIS_TAG)
    assert run.tags[RAY_NODE_TAG].startswith(tier), run.tags  # light / medium / heavy-1|2
    assert launcher.job_request(run)["entrypoint_resources"] == {f"e2i-{tier}": 1}
    job = run.tags[RAY_JOB_TAG]
    info = launcher.client.get_job_info(job)
    assert info.metadata["e2i/tier"] == tier
    assert info.entrypoint.startswith(f"python -m e2i_pipelines.launcher.ray_worker --memory {memory} ")
    record = parse_exit_record(launcher.client.get_job_logs(job))
    assert record is not None
    return record


def test_auto_run_without_history_lands_on_its_declared_tiers_node(ray_harness):
    run = finished(ray_harness, probe(ray_harness, "medium", 10, AUTO))
    assert run.tags[TIER_SOURCE_TAG] == "auto"
    assert run.tags[TIER_BASIS_TAG] == "no history (input 10000): declared tier medium"
    assert PREDICTED_PEAK_TAG not in run.tags
    assert_job_on_tier(ray_harness, run, "medium")


def test_ray_run_records_the_peak_of_its_own_cgroup(ray_harness, ray_cluster):
    """Three medium runs on the one medium node: a warm-up (its page cache is charged to the
    first cgroup that reads the code), a probe allocating nothing, one allocating 300 MiB."""
    runs = [finished(ray_harness, probe(ray_harness, "medium", mib, {TIER_TAG: "medium"}))
            for mib in (0, 0, ALLOCATE_MIB)]
    budget = parse_bytes(RAY_PROFILES["medium"]["memory"])
    v1 = own_memory_cgroup() is not None and own_memory_cgroup().version == 1
    node = next(p for p in ray_cluster.cgroups if p.name.endswith("-medium"))
    for run in runs:
        record = assert_job_on_tier(ray_harness, run, "medium")
        tags = run.tags
        if not v1:  # cgroup v2: the node's cgroup cannot be divided; the tag says so
            assert tags[USAGE_SCOPE_TAG].startswith(SCOPE_NODE), tags
            continue
        assert tags[USAGE_SCOPE_TAG] == f"{SCOPE_RUN} v1", tags
        assert tags[USAGE_SOURCE_TAG] == "memory: cgroup v1, cpu: cgroup v1", tags
        assert record["memory_limit_bytes"] == budget  # the run's own cap is its tier
        own = Path(record["cgroup"])  # a cgroup of its own, below the node's
        assert own.parent == node and own.name.startswith("e2i-run-"), own
        assert 0 < int(tags[PEAK_MEMORY_TAG]) < budget
        assert float(tags[MEMORY_UTILISATION_TAG]) == pytest.approx(int(tags[PEAK_MEMORY_TAG]) / budget, abs=1e-4)
        assert float(tags[CPU_SECONDS_TAG]) > 0.5  # the run worker imports the code location
        assert 0 < float(tags[CPU_UTILISATION_TAG]) <= 1.0  # medium: 1 CPU x wall time
    assert list(node.glob("e2i-run-*")) == []  # every run's cgroup was removed
    if v1:
        base, allocated = int(runs[1].tags[PEAK_MEMORY_TAG]), int(runs[2].tags[PEAK_MEMORY_TAG])
        grown = allocated - base
        print(f"ray usage: base peak {base / MIB:.1f} MiB, {ALLOCATE_MIB} MiB probe grew {grown / MIB:.1f} MiB")
        assert abs(grown - ALLOCATE_MIB * MIB) <= 0.05 * ALLOCATE_MIB * MIB, (grown / MIB, base / MIB)


def test_auto_run_after_small_history_lands_on_the_light_node(ray_harness):
    history = [finished(ray_harness, probe(ray_harness, "heavy", mib, {TIER_TAG: "heavy"}))
               for mib in (20, 60, 100)]
    for run in history:
        assert_job_on_tier(ray_harness, run, "heavy")
    small = finished(ray_harness, probe(ray_harness, "heavy", 30, AUTO))
    large = finished(ray_harness, probe(ray_harness, "heavy", 600, AUTO))
    assert_job_on_tier(ray_harness, small, "light")  # declared heavy, sized light from history
    assert_job_on_tier(ray_harness, large, "heavy")
    for run, n in ((small, 3), (large, 4)):  # the small auto run is history for the large one
        assert run.tags[TIER_SOURCE_TAG] == "auto"
        assert f"{n} past run(s), theil-sen" in run.tags[TIER_BASIS_TAG], run.tags[TIER_BASIS_TAG]
        # the prediction is within 10 % of what the run then used: the fit found the affine truth
        print(f"ray auto: {run.tags[TIER_BASIS_TAG]}; measured {int(run.tags[PEAK_MEMORY_TAG]) / MIB:.0f} MiB")
        assert int(run.tags[PREDICTED_PEAK_TAG]) == pytest.approx(int(run.tags[PEAK_MEMORY_TAG]), rel=0.1)
