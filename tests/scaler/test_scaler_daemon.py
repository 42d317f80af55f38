"""Integration: the scaler sensor in a real daemon on a Postgres instance caps a heavy burst.

``dagster dev`` (webserver + daemon, QueuedRunCoordinator, run-granularity pools, default
subprocess launcher) on a fresh Postgres database; the scaler config allows at most 2 heavy
runs. Six heavy probe runs and two light ones are submitted over GraphQL; run statuses are
sampled while they run. The code location is ``tests/scaler/scaler_location.py`` (the real
probe jobs and scaler sensor without the analytics imports: each run process imports it).
"""

import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster import DagsterRunStatus
from dagster._core.storage.dagster_run import ACTIVE_RUN_STATUSES
from dagster_graphql import DagsterGraphQLClient

from e2i_pipelines.scaler.config import CONFIG_ENV
from e2i_pipelines.scaler.evaluation import current_pool_limit
from tests.support.dagster_processes import (
    REPO_ROOT,
    DagsterProcess,
    dagster_dev,
    free_port,
    postgres_storage,
    write_instance_yaml,
)

MAX_HEAVY = 2
HEAVY_RUNS = 6
LIGHT_RUNS = 2
HOLD_SECONDS = 4
QUEUED_RUN_COORDINATOR = {
    "module": "dagster._core.run_coordinator",
    "class": "QueuedRunCoordinator",
    "config": {"dequeue_interval_seconds": 1},
}


def _start_dagster_dev(tmp_path: Path, home: Path, port: int, env: dict) -> DagsterProcess:
    """``dagster dev`` on the small scaler location, started and serving."""
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "tests.scaler.scaler_location", "location_name": "e2i",
        "working_directory": str(REPO_ROOT)}}]}))
    return dagster_dev(home, port, env, workspace=workspace)


def _wait_for(what: str, check, timeout: float, proc) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{proc.log_tail()}")


def _submit(client: DagsterGraphQLClient, job: str, asset: str, hold: float) -> str:
    return client.submit_job_execution(
        job, repository_location_name="e2i",
        run_config={"ops": {asset: {"config": {"hold_seconds": hold}}},
                    "execution": {"config": {"in_process": {}}}},
    )


@pytest.mark.postgres
@pytest.mark.webserver
def test_heavy_burst_is_capped_and_light_runs_pass(tmp_path, postgres_db):
    home = tmp_path / "dagster_home"
    storage = postgres_storage(postgres_db)
    write_instance_yaml(home, {
        "storage": storage,
        "run_coordinator": QUEUED_RUN_COORDINATOR,
    })
    scaler_yaml = tmp_path / "scaler.yaml"
    scaler_yaml.write_text(
        f"max_heavy_runs: {MAX_HEAVY}\ninterval_seconds: 1\n"
        "capacity: {source: host}\nheavy_profile: {cpus: 0.1, memory: 64m}\n"
    )
    env = {CONFIG_ENV: str(scaler_yaml), "E2I_DATA_DIR": str(tmp_path / "data")}
    port = free_port()
    instance = dg.DagsterInstance.from_config(str(home))
    proc = _start_dagster_dev(tmp_path, home, port, env)
    try:
        # The scaler's first tick pins the idle pool at 0 before anything heavy is queued.
        _wait_for("the scaler's first decision (limit 0)",
                  lambda: current_pool_limit(instance) == 0, 180, proc)
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        heavy_ids = [_submit(client, "probe_heavy_job", "probe_heavy", HOLD_SECONDS)
                     for _ in range(HEAVY_RUNS)]
        light_ids = [_submit(client, "probe_light_job", "probe_light", 0) for _ in range(LIGHT_RUNS)]

        started = time.monotonic()
        max_in_progress, limits_seen = 0, set()
        light_started_while_heavy_queued: set[str] = set()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            runs = {r.run_id: r.status for r in instance.get_runs(
                dg.RunsFilter(run_ids=heavy_ids + light_ids))}
            heavy = [runs[i] for i in heavy_ids]
            in_progress = sum(s in ACTIVE_RUN_STATUSES for s in heavy)
            max_in_progress = max(max_in_progress, in_progress)
            limits_seen.add(current_pool_limit(instance))
            if DagsterRunStatus.QUEUED in heavy:
                light_started_while_heavy_queued.update(
                    i for i in light_ids if runs[i] != DagsterRunStatus.QUEUED)
            if all(s in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE,
                         DagsterRunStatus.CANCELED) for s in runs.values()):
                break
            time.sleep(0.25)
        else:
            raise AssertionError(f"runs did not finish: {runs}\n{proc.log_tail()}")

        print(f"heavy burst: max {max_in_progress} heavy in progress, limits seen "
              f"{sorted(x for x in limits_seen if x is not None)}, "
              f"{time.monotonic() - started:.0f}s from submission to all finished")
        assert max_in_progress <= MAX_HEAVY, f"{max_in_progress} heavy runs in progress at once"
        assert max_in_progress == MAX_HEAVY, "the cap was never used: heavy runs were serialised"
        assert all(runs[i] == DagsterRunStatus.SUCCESS for i in heavy_ids + light_ids), runs
        assert max(limits_seen - {None}) == MAX_HEAVY, limits_seen
        assert light_started_while_heavy_queued == set(light_ids), (
            "light runs waited behind the heavy cap")

        # No heavy demand left: the cap returns to min (0).
        _wait_for("the cap to return to 0", lambda: current_pool_limit(instance) == 0, 60, proc)
        ticks = instance.get_ticks(*_scaler_origin_and_selector(instance))
        assert any('"allowed": 2' in (t.cursor or "") for t in ticks)
    finally:
        proc.stop()
        instance.dispose()


def _scaler_origin_and_selector(instance: dg.DagsterInstance) -> tuple[str, str]:
    state = next(s for s in instance.all_instigator_state() if s.name == "e2i_heavy_scaler")
    return state.instigator_origin_id, state.selector_id
