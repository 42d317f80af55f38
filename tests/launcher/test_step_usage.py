"""Per-step usage on a real Dagster instance, multiprocess and in-process executors: the hook
records each step's peak memory and CPU time in the step's own process, the run worker's reader
folds them into ``e2i/step_inputs`` with the wall time, ``e2i/peak_step`` names the largest, and
the API's run view lists them."""

import json

import dagster as dg
import numpy as np
import pytest
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import serialize_value

from e2i_api.models import RunStatus
from e2i_api.run_views import run_detail
from e2i_pipelines.catalog import Catalog
from e2i_pipelines.defs.launcher.step_usage import with_step_usage
from e2i_pipelines.defs.monitoring.sensors import cost_finished_runs
from e2i_pipelines.launcher.cgroup_usage import Usage
from e2i_pipelines.launcher.run_worker import record_on_run
from e2i_pipelines.launcher.step_inputs import STEP_INPUTS_TAG, step_inputs, step_inputs_tag
from e2i_pipelines.launcher.step_usage import (
    PEAK_KEY,
    PEAK_STEP_MEMORY_TAG,
    PEAK_STEP_TAG,
    STEPS_IN_PROCESS_KEY,
    peak_step_tags,
    usage_of,
)

MIB = 2**20
ALLOCATE_MIB = 300


class Allocate(dg.Config):
    mib: int = ALLOCATE_MIB
    fail: bool = False


@dg.asset
def allocates(config: Allocate) -> int:
    block = np.ones(config.mib * MIB // 8)  # touched pages
    if config.fail:
        raise dg.Failure(description="allocates failed on request")
    return int(block[:4].sum())


@dg.asset
def idle() -> int:
    return 1


@dg.asset
def after(allocates: int) -> int:
    """Runs after ``allocates`` (which freed its block) in the same process when in-process."""
    return allocates + 1


def parallel_job() -> dg.JobDefinition:
    """Two independent steps: the multiprocess executor runs each in its own process."""
    job = dg.define_asset_job("parallel_job", selection=["allocates", "idle"])
    return dg.Definitions(assets=with_step_usage([allocates, idle]), jobs=[job]).resolve_job_def("parallel_job")


def _usage_events(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict]:
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    return {e.dagster_event.step_key: e.dagster_event.event_specific_data.metadata
            for e in events if usage_of(e.dagster_event)}


def test_multiprocess_steps_record_their_own_peak_and_wall_time():
    with dg.instance_for_test() as instance:
        result = dg.execute_job(dg.reconstructable(parallel_job), instance=instance)
        assert result.success
        steps = step_inputs(instance, result.run_id)
        events = _usage_events(instance, result.run_id)
        # the run worker's own end-of-run path (Docker, Ray and Kubernetes workers share it)
        run = instance.get_run_by_id(result.run_id)
        args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=instance.get_ref())
        record_on_run(["dagster", "api", "execute_run", serialize_value(args)], {},
                      Usage(peak_bytes=None, cpu_seconds=None, wall_seconds=1.0, source="test"))
        tags = instance.get_run_by_id(result.run_id).tags
    assert json.loads(tags[STEP_INPUTS_TAG]) == steps
    assert tags[PEAK_STEP_TAG] == "allocates"
    assert set(events) == {"allocates", "idle"}
    assert all(found[STEPS_IN_PROCESS_KEY].value == 1 for found in events.values())  # own process
    big, small = steps["allocates"], steps["idle"]
    assert small["peak_memory_bytes"] < big["peak_memory_bytes"]
    # both processes import the same modules: the difference is the allocation, within 10 %
    grown = big["peak_memory_bytes"] - small["peak_memory_bytes"]
    assert abs(grown - ALLOCATE_MIB * MIB) <= 0.10 * ALLOCATE_MIB * MIB, grown / MIB
    assert big["peak_memory_bytes"] <= 1.10 * ALLOCATE_MIB * MIB + small["peak_memory_bytes"]
    for found in (big, small):
        assert found["wall_seconds"] > 0 and found["cpu_seconds"] > 0
    assert big["wall_seconds"] < 120
    assert peak_step_tags(steps) == {PEAK_STEP_TAG: "allocates",
                                     PEAK_STEP_MEMORY_TAG: str(big["peak_memory_bytes"])}


def test_in_process_steps_reset_the_peak_between_steps():
    job = dg.Definitions(assets=with_step_usage([allocates, after])).resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance)
        steps = step_inputs(instance, result.run_id)
        events = _usage_events(instance, result.run_id)
        # no e2i run worker here (the quick start): the run-cost sensor's pass tags the steps
        assert cost_finished_runs(instance, None)[0] == 1
        tags = instance.get_run_by_id(result.run_id).tags
    assert json.loads(tags[STEP_INPUTS_TAG]) == steps and tags[PEAK_STEP_TAG] == "allocates"
    assert events["allocates"][STEPS_IN_PROCESS_KEY].value == 1
    assert events["after"][STEPS_IN_PROCESS_KEY].value == 2  # one process, second step
    # the block was freed before ``after`` ran: its own peak is far below the first step's
    assert steps["after"]["peak_memory_bytes"] < steps["allocates"]["peak_memory_bytes"] - 0.8 * ALLOCATE_MIB * MIB


def test_a_failed_step_records_its_usage_too():
    job = dg.Definitions(assets=with_step_usage([allocates])).resolve_implicit_global_asset_job_def()
    config = {"ops": {"allocates": {"config": {"mib": 64, "fail": True}}}}
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(run_config=config, instance=instance, raise_on_error=False)
        assert not result.success
        steps = step_inputs(instance, result.run_id)
    assert steps["allocates"]["peak_memory_bytes"] >= 64 * MIB
    assert "wall_seconds" in steps["allocates"]


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), True, "9" * 30, None])
def test_usage_of_leaves_out_unreadable_numbers(value):
    event = DagsterEvent(
        event_type_value="ENGINE_EVENT", job_name="j", step_key="s",
        event_specific_data=EngineEventData(metadata={PEAK_KEY: value}) if value is not None
        else EngineEventData(metadata={"other": 1}))
    assert "peak_memory_bytes" not in usage_of(event)


def test_run_view_lists_steps_once_the_run_ended():
    steps = {"a": {"rows": 10, "wall_seconds": 1.5, "peak_memory_bytes": 300 * MIB, "cpu_seconds": 2.0},
             "b": {"wall_seconds": 0.5, "peak_memory_bytes": 100 * MIB}}
    tags = {**step_inputs_tag(steps), **peak_step_tags(steps)}
    run = {"runId": "r", "jobName": "probe_light_job", "tags": [{"key": k, "value": v} for k, v in tags.items()]}
    ended = run_detail({**run, "status": RunStatus.SUCCESS.value}, Catalog([]))
    assert ended.peak_step == "a"
    assert [(s.step, s.peak_memory, s.cpu_seconds, s.wall_seconds) for s in ended.steps] == [
        ("a", 300 * MIB, 2.0, 1.5), ("b", 100 * MIB, None, 0.5)]
    running = run_detail({**run, "status": RunStatus.STARTED.value}, Catalog([]))
    assert (running.steps, running.peak_step) == ([], None)
