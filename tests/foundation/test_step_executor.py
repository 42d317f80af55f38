"""The code location's default executor: steps forked from a forkserver that preloaded the code
location, unless the run config names a start method; ``in_process`` still works."""

from __future__ import annotations

import os
import sys

import dagster as dg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository

from e2i_pipelines.defs.orchestration.executor import (
    PRELOAD_MODULES,
    multiprocess_config,
    step_executor,
)


def _where() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={
        "pid": os.getpid(), "ppid": os.getppid(),
        "preloaded": all(name in sys.modules for name in PRELOAD_MODULES),
    })


@dg.asset
def first() -> dg.MaterializeResult:
    return _where()


@dg.asset(deps=[first])
def second() -> dg.MaterializeResult:
    return _where()


defs = dg.Definitions(assets=[first, second], jobs=[dg.define_asset_job("two_steps", [first, second])],
                      executor=step_executor)


def _steps(tmp_path, execution: dict) -> dict[str, dict]:
    job = ReconstructableRepository.for_module(__name__, "defs", os.getcwd()).get_reconstructable_job("two_steps")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.execute_job(job, instance=instance, run_config={"execution": {"config": execution}})
        assert result.success
        materializations = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
        return {m.asset_key.to_user_string(): {k: v.value for k, v in m.metadata.items()} for m in materializations}


def test_config_defaults_to_the_forkserver_and_keeps_an_explicit_start_method() -> None:
    assert multiprocess_config({}) == {"start_method": {"forkserver": {"preload_modules": PRELOAD_MODULES}}}
    assert multiprocess_config({"start_method": {"spawn": {}}, "max_concurrent": 1}) == {
        "start_method": {"spawn": {}}, "max_concurrent": 1}


def test_steps_fork_from_one_preloaded_forkserver(tmp_path) -> None:
    steps = _steps(tmp_path, {"multiprocess": {}})
    assert set(steps) == {"first", "second"}
    pids = {s["pid"] for s in steps.values()}
    assert len(pids) == 2 and os.getpid() not in pids  # one process per step
    (server,) = {s["ppid"] for s in steps.values()}  # both forked by the same forkserver ...
    assert server != os.getpid()  # ... which is not this (the run's) process
    assert all(s["preloaded"] for s in steps.values())


@pytest.mark.parametrize("execution", [{"multiprocess": {"start_method": {"spawn": {}}}}, {"in_process": {}}])
def test_spawn_and_in_process_stay_available(tmp_path, execution: dict) -> None:
    steps = _steps(tmp_path, execution)
    if "in_process" in execution:
        assert {s["pid"] for s in steps.values()} == {os.getpid()}
    else:  # spawned straight from the run's process, nothing preloaded
        assert {s["ppid"] for s in steps.values()} == {os.getpid()}
        assert not any(s["preloaded"] for s in steps.values())
