"""``tier: auto`` on the real Docker launcher, real Postgres, e2i:local image.

The probe allocates a known number of MiB; its run declares ``e2i/input_size`` = MiB x 1000 rows,
so peak memory is (base + size / 1000 MiB): the affine truth the fit must find. Test profiles:
light 768m, medium 1280m, heavy 1536m (tests/launcher/harness.py).
"""

from __future__ import annotations

import time

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from e2i_api.run_views import run_detail
from e2i_pipelines.catalog import Catalog
from e2i_pipelines.launcher.cgroup_usage import PEAK_MEMORY_TAG
from e2i_pipelines.launcher.promotion import (
    FAILURE_TAG,
    PARENT_PREDICTED_PEAK_TAG,
    PARENT_RUN_TAG,
    PROMOTED_FROM_TAG,
    TIER_SOURCE_TAG,
    WORKER_EXIT_TAG,
)
from e2i_pipelines.launcher.sizing import (
    INPUT_SIZE_TAG,
    PREDICTED_PEAK_TAG,
    SIZING_KEY_TAG,
    TIER_BASIS_TAG,
    history,
)
from e2i_pipelines.launcher.sizing_fit import predict_peak
from e2i_pipelines.tiers import TIER_TAG, Tier
from tests.launcher.harness import IN_PROCESS, LauncherHarness, probe_config
from tests.launcher.test_docker_launcher import _wait_child, _wait_sensor_ticked
from tests.support.dagster_processes import dagster_daemon

pytestmark = [pytest.mark.docker, pytest.mark.postgres]
DONE = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
MIB = 2**20
AUTO = {TIER_TAG: "auto"}


def size_tag(mib: int) -> dict[str, str]:
    return {INPUT_SIZE_TAG: f"{mib * 1000}x1"}


def probe(harness: LauncherHarness, mib: int, tags: dict[str, str], allocate: int | None = None,
          tier: str = "heavy") -> str:
    """Launch ``probe_<tier>_job`` declaring ``mib`` x 1000 rows, allocating ``allocate`` MiB
    (default ``mib``), with the in-process executor (one import of the code location)."""
    config = {**probe_config(tier, allocate_mb=mib if allocate is None else allocate, hold_seconds=1),
              **IN_PROCESS}
    return harness.launch(f"probe_{tier}_job", config, tags={**size_tag(mib), **tags})


def finished(harness: LauncherHarness, run_id: str):
    """The run once its worker wrote its exit record (usage tags are written before it)."""
    run = harness.wait_for(run_id, DONE)
    deadline = time.monotonic() + 120
    while WORKER_EXIT_TAG not in run.tags and time.monotonic() < deadline:
        time.sleep(0.5)
        run = harness.run(run_id)
    assert WORKER_EXIT_TAG in run.tags, harness.log_text(run_id)
    return run


def api_shape(run) -> dict:
    """A stored run as the API reads it from Dagster's GraphQL (what ``run_detail`` takes)."""
    return {"runId": run.run_id, "jobName": run.job_name, "status": run.status.value,
            "tags": [{"key": k, "value": v} for k, v in run.tags.items()]}


def predicted(instance, key: str, mib: int) -> int:
    profiles = instance.run_launcher.tier_profiles
    prediction = predict_peak(history(instance, key, profiles), mib * 1000.0)
    assert prediction is not None
    return prediction.peak


def test_auto_run_without_history_uses_its_declared_tier(harness):
    run = finished(harness, probe(harness, 10, AUTO, tier="medium"))
    assert run.status == DagsterRunStatus.SUCCESS, harness.log_text(run.run_id)
    assert run.tags[TIER_TAG] == "medium" and run.tags[TIER_SOURCE_TAG] == "auto"
    assert run.tags[TIER_BASIS_TAG] == "no history (input 10000): declared tier medium"
    assert PREDICTED_PEAK_TAG not in run.tags and run.tags[SIZING_KEY_TAG]


def test_history_sizes_smaller_and_larger_inputs_and_survives_a_restart(harness, postgres_db, tmp_path):
    # The first container to read the image's files has their page cache charged to its memory
    # cgroup (~60 MiB more peak here): a run of another job (another sizing key) takes that.
    finished(harness, probe(harness, 10, {}, tier="light"))
    history_runs = [finished(harness, probe(harness, mib, {TIER_TAG: "heavy"})) for mib in (100, 250, 400)]
    assert all(r.status == DagsterRunStatus.SUCCESS for r in history_runs)
    key = history_runs[0].tags[SIZING_KEY_TAG]
    assert {r.tags[SIZING_KEY_TAG] for r in history_runs} == {key}
    peaks = [int(r.tags[PEAK_MEMORY_TAG]) for r in history_runs]
    slope = (peaks[2] - peaks[0]) / (300 * 1000)  # bytes per row: ~1 MiB per 1000 rows
    assert slope == pytest.approx(MIB / 1000, rel=0.15), peaks

    # a new instance on the same Postgres (a restarted daemon/webserver) reads the same history
    restarted = DagsterInstance.from_config(str(harness.home))
    try:
        for mib in (20, 600):
            assert predicted(restarted, key, mib) == predicted(harness.instance, key, mib)
    finally:
        restarted.dispose()

    small = finished(harness, probe(harness, 20, AUTO))
    large = finished(harness, probe(harness, 600, AUTO))
    assert small.status == large.status == DagsterRunStatus.SUCCESS
    chosen = [Tier(run.tags[TIER_TAG]) for run in (small, large)]
    assert chosen[0].rank < chosen[1].rank, (small.tags, large.tags)
    assert chosen[0] is Tier.LIGHT, small.tags[TIER_BASIS_TAG]
    for run, n in ((small, 3), (large, 4)):  # the small auto run is history for the large one
        assert run.tags[TIER_SOURCE_TAG] == "auto"
        assert f"{n} past run(s), theil-sen" in run.tags[TIER_BASIS_TAG]
        # prediction within 10 % of the measured peak: the fit found the affine truth
        assert int(run.tags[PREDICTED_PEAK_TAG]) == pytest.approx(int(run.tags[PEAK_MEMORY_TAG]), rel=0.1)


def test_under_predicted_run_is_oom_killed_promoted_and_raises_the_next_prediction(harness):
    seeds = [finished(harness, probe(harness, mib, {TIER_TAG: "heavy"})) for mib in (20, 60)]
    key = seeds[0].tags[SIZING_KEY_TAG]
    before = predicted(harness.instance, key, 40)
    daemon = dagster_daemon(harness.home)
    try:
        _wait_sensor_ticked(harness, daemon)
        # declares 40k rows (predicted light) but allocates 700 MiB: OOM-killed at light
        parent = finished(harness, probe(harness, 40, AUTO, allocate=700))
        assert parent.tags[TIER_TAG] == "light", parent.tags[TIER_BASIS_TAG]
        assert parent.status == DagsterRunStatus.FAILURE and parent.tags[FAILURE_TAG] == "oom"
        child = finished(harness, _wait_child(harness, parent.run_id, daemon).run_id)
    finally:
        daemon.stop()
    assert child.status == DagsterRunStatus.SUCCESS, harness.log_text(child.run_id)
    assert child.tags[PROMOTED_FROM_TAG] == "light" and child.tags[TIER_TAG] == "medium"
    assert child.tags[PARENT_RUN_TAG] == parent.run_id and child.tags[SIZING_KEY_TAG] == key
    # the child's tier comes from the promotion; the parent's prediction is named as the parent's
    assert child.tags[TIER_SOURCE_TAG] == "promotion"
    assert child.tags[PARENT_PREDICTED_PEAK_TAG] == parent.tags[PREDICTED_PEAK_TAG]
    assert PREDICTED_PEAK_TAG not in child.tags and TIER_BASIS_TAG not in child.tags
    # GET /v1/runs/{id}'s view of both real runs: the chosen tier, why, and the measured use
    views = {run.run_id: run_detail(api_shape(run), Catalog([])) for run in (parent, child)}
    assert views[parent.run_id].tier_source == "auto" and views[parent.run_id].tier.value == "light"
    assert views[parent.run_id].predicted_peak == int(parent.tags[PREDICTED_PEAK_TAG])
    assert views[child.run_id].tier_source == "promotion" and views[child.run_id].tier.value == "medium"
    assert views[child.run_id].parent_predicted_peak == views[parent.run_id].predicted_peak
    assert views[child.run_id].peak_memory == int(child.tags[PEAK_MEMORY_TAG]) > 700 * MIB
    after = predicted(harness.instance, key, 40)
    assert after > max(before, int(parent.tags.get(PEAK_MEMORY_TAG, 0)))
    # the next auto run of that size is no longer sized light
    nxt = finished(harness, probe(harness, 40, AUTO))
    assert Tier(nxt.tags[TIER_TAG]).rank > Tier.LIGHT.rank, nxt.tags[TIER_BASIS_TAG]
