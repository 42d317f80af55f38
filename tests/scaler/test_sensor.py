"""The scaler sensor on a real test instance: writes the pool limit only on change, the cursor
holds each decision, and demand counts only runs whose plan touches the heavy pool."""

import json

import dagster as dg
import pytest
from dagster import DagsterEventType, DagsterRunStatus

from e2i_pipelines.defs.scaler.sensors import build_heavy_scaler_sensor
from e2i_pipelines.scaler import SCALER_SENSOR_NAME
from e2i_pipelines.scaler.config import parse_config
from e2i_pipelines.scaler.evaluation import current_pool_limit
from e2i_pipelines.tiers import HEAVY_POOL
from tests.scaler.queued_runs import queue_run, report

CONFIG = parse_config({
    "max_heavy_runs": 4,
    "interval_seconds": 5,
    "capacity": {"source": "host", "cpus": 3, "memory": "64g"},
    "heavy_profile": {"cpus": 1, "memory": "1g"},
})


@pytest.fixture()
def instance_and_writes(monkeypatch):
    with dg.instance_for_test() as instance:
        storage = instance.event_log_storage
        writes: list[tuple[str, int]] = []
        real = storage.set_concurrency_slots

        def recording(pool: str, num: int) -> None:
            writes.append((pool, num))
            real(pool, num)

        monkeypatch.setattr(storage, "set_concurrency_slots", recording)
        yield instance, writes


def _tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None) -> dict:
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    assert not result.run_requests
    record = json.loads(result.cursor)
    assert record["summary"] in result.skip_reason.skip_message
    return record


def test_sensor_definition_defaults():
    sensor = build_heavy_scaler_sensor(CONFIG)
    assert sensor.name == SCALER_SENSOR_NAME
    assert sensor.minimum_interval_seconds == 5
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_sensor_writes_only_on_change_and_records_decisions(instance_and_writes):
    instance, writes = instance_and_writes
    sensor = build_heavy_scaler_sensor(CONFIG)

    # Idle, pool without a limit: set it to min (0) so nothing heavy is reserved.
    record = _tick(sensor, instance, None)
    assert writes == [(HEAVY_POOL, 0)] and record["wrote"] is True
    assert record["decision"]["current_limit"] is None and record["decision"]["allowed"] == 0
    assert record["capacity"] is None  # idle: capacity not measured
    assert current_pool_limit(instance) == 0

    # Idle again: no write.
    record = _tick(sensor, instance, json.dumps(record))
    assert len(writes) == 1 and record["wrote"] is False

    # 5 heavy queued + 2 light queued: demand counts heavy only, capacity (3 slots) binds.
    heavy = [queue_run(instance, "probe_heavy_job") for _ in range(5)]
    for _ in range(2):
        queue_run(instance, "probe_light_job")
    record = _tick(sensor, instance, json.dumps(record))
    decision = record["decision"]
    assert (decision["queued"], decision["running"], decision["demand"]) == (5, 0, 5)
    assert (decision["capacity_slots"], decision["allowed"], decision["bound_by"]) == (3, 3, "capacity")
    assert record["capacity"]["total_cpus"] == 3.0
    assert record["heavy_profile"]["memory_bytes"] == 1024**3
    assert writes[-1] == (HEAVY_POOL, 3) and current_pool_limit(instance) == 3

    # Two start, three are canceled: demand 2 -> scale down to 2 (running runs untouched).
    for run in heavy[:2]:
        report(instance, run, DagsterEventType.RUN_START)
    for run in heavy[2:]:
        report(instance, run, DagsterEventType.RUN_CANCELED)
    record = _tick(sensor, instance, json.dumps(record))
    assert (record["decision"]["running"], record["decision"]["allowed"]) == (2, 2)
    assert writes[-1] == (HEAVY_POOL, 2)
    assert all(instance.get_run_by_id(r.run_id).status == DagsterRunStatus.STARTED for r in heavy[:2])

    # Nothing changed: no write.
    count = len(writes)
    record = _tick(sensor, instance, json.dumps(record))
    assert len(writes) == count and record["wrote"] is False

    # Both finish: back to 0.
    for run in heavy[:2]:
        report(instance, run, DagsterEventType.RUN_SUCCESS)
    record = _tick(sensor, instance, json.dumps(record))
    assert record["decision"]["allowed"] == 0 and writes[-1] == (HEAVY_POOL, 0)
    assert current_pool_limit(instance) == 0


def test_sensor_rewrites_a_limit_changed_behind_its_back(instance_and_writes):
    instance, writes = instance_and_writes
    sensor = build_heavy_scaler_sensor(CONFIG)
    _tick(sensor, instance, None)
    instance.event_log_storage.set_concurrency_slots(HEAVY_POOL, 7)  # e.g. by hand in the UI
    record = _tick(sensor, instance, None)
    assert record["decision"]["current_limit"] == 7
    assert writes[-1] == (HEAVY_POOL, 0) and current_pool_limit(instance) == 0


def test_code_location_registers_the_scaler():
    from e2i_pipelines.definitions import defs

    sensor = defs.resolve_sensor_def(SCALER_SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
