"""On the real Docker launcher, a two-step run (multiprocess executor: each step in its own
process) records each step's peak memory and wall time: the step that allocated a known amount
peaks at that amount above the other within 10 %, ``e2i/peak_step`` names it, and the API's run
view lists both steps."""

from __future__ import annotations

import json
from typing import Any

import dagster as dg
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.storage.dagster_run import DagsterRunStatus

from e2i_api.models import RunStatus
from e2i_api.run_views import run_detail
from e2i_pipelines.catalog import Catalog
from e2i_pipelines.launcher.cgroup_usage import PEAK_MEMORY_TAG
from e2i_pipelines.launcher.step_inputs import STEP_INPUTS_TAG
from e2i_pipelines.launcher.step_usage import PEAK_STEP_MEMORY_TAG, PEAK_STEP_TAG
from tests.launcher.harness import LauncherHarness, probe_config
from tests.launcher.test_run_usage_docker import _finished_tags

MIB = 2**20
ALLOCATE_MIB = 400
ASSET_JOB = "__ASSET_JOB"


def launch_assets(harness: LauncherHarness, keys: list[str], run_config: dict[str, Any]) -> str:
    """Create and submit a run of the implicit asset job for ``keys`` (as the UI's Materialize)."""
    workspace = harness.context.create_request_context()
    location = workspace.get_code_location("e2i")
    repo = next(iter(location.get_repositories().values()))
    selection = frozenset(dg.AssetKey(key) for key in keys)
    remote_job = location.get_job(JobSubsetSelector(
        location_name=location.name, repository_name=repo.name, job_name=ASSET_JOB,
        op_selection=None, asset_selection=selection))
    plan = location.get_execution_plan(remote_job, run_config, step_keys_to_execute=None,
                                       known_state=None, instance=harness.instance).execution_plan_snapshot
    run = harness.instance.create_run(
        job_name=ASSET_JOB, run_id=None, run_config=run_config, resolved_op_selection=None,
        step_keys_to_execute=plan.step_keys_to_execute, op_selection=None, status=None,
        root_run_id=None, parent_run_id=None, tags={}, job_snapshot=remote_job.job_snapshot,
        execution_plan_snapshot=plan, parent_job_snapshot=remote_job.parent_job_snapshot,
        remote_job_origin=remote_job.get_remote_origin(), job_code_origin=remote_job.get_python_origin(),
        asset_selection=selection, asset_check_selection=None, asset_graph=repo.asset_graph)
    harness.instance.submit_run(run.run_id, workspace)
    return run.run_id


def test_two_step_docker_run_records_each_steps_peak(harness):
    config = {"ops": {**probe_config("heavy", allocate_mb=ALLOCATE_MIB, hold_seconds=1)["ops"],
                      **probe_config("light", allocate_mb=0, hold_seconds=1)["ops"]}}
    run_id = launch_assets(harness, ["probe_heavy", "probe_light"], config)
    tags = _finished_tags(harness, run_id)
    assert harness.run(run_id).status == DagsterRunStatus.SUCCESS, harness.log_text(run_id)
    steps = json.loads(tags[STEP_INPUTS_TAG])
    big, small = steps["probe_heavy"], steps["probe_light"]
    # two step processes importing the same code location: the difference is the allocation
    grown = big["peak_memory_bytes"] - small["peak_memory_bytes"]
    print(f"step peaks MiB: probe_heavy {big['peak_memory_bytes'] / MIB:.1f}, probe_light "
          f"{small['peak_memory_bytes'] / MIB:.1f}, grown {grown / MIB:.1f} of {ALLOCATE_MIB}; "
          f"run cgroup peak {int(tags[PEAK_MEMORY_TAG]) / MIB:.1f}")
    assert abs(grown - ALLOCATE_MIB * MIB) <= 0.10 * ALLOCATE_MIB * MIB, (grown / MIB, steps)
    assert big["peak_memory_bytes"] <= 1.10 * ALLOCATE_MIB * MIB + small["peak_memory_bytes"]
    for found in (big, small):
        assert 1.0 <= found["wall_seconds"] < 300, steps  # each step holds for 1 s
        assert found["cpu_seconds"] > 0
    assert (tags[PEAK_STEP_TAG], int(tags[PEAK_STEP_MEMORY_TAG])) == ("probe_heavy", big["peak_memory_bytes"])
    # the container held both step processes and the run worker: its peak is above either step's
    assert int(tags[PEAK_MEMORY_TAG]) > big["peak_memory_bytes"]
    view = run_detail({"runId": run_id, "jobName": ASSET_JOB, "status": RunStatus.SUCCESS.value,
                       "tags": [{"key": k, "value": v} for k, v in tags.items()]}, Catalog([]))
    assert view.peak_step == "probe_heavy"
    assert {s.step: s.peak_memory for s in view.steps} == {
        "probe_heavy": big["peak_memory_bytes"], "probe_light": small["peak_memory_bytes"]}
