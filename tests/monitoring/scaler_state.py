"""Scaler decisions stored as the ``e2i_heavy_scaler`` sensor stores them (state cursor + ticks)."""

from __future__ import annotations

import json

import dagster as dg
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteInstigatorOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    SensorInstigatorData,
    TickData,
    TickStatus,
)

from e2i_pipelines.scaler import SCALER_SENSOR_NAME


def decision_record(at: float, allowed: int, *, demand: int = 0, capacity: int | None = None,
                    lo: int = 0, hi: int = 4, queued: int = 0, running: int = 0,
                    bound_by: str = "demand") -> dict:
    return {"evaluated_at": at, "decision": {
        "allowed": allowed, "demand": demand, "capacity_slots": capacity, "min_heavy_runs": lo,
        "max_heavy_runs": hi, "queued": queued, "running": running, "bound_by": bound_by}}


def store_decisions(instance: dg.DagsterInstance, records: list[dict]) -> None:
    """One tick per record and the sensor's state cursor at the last one."""
    origin = RemoteInstigatorOrigin(
        RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("e2i"), "__repository__"), SCALER_SENSOR_NAME)
    state = InstigatorState(origin, InstigatorType.SENSOR, InstigatorStatus.RUNNING,
                            SensorInstigatorData(cursor=json.dumps(records[-1])))
    instance.add_instigator_state(state)
    for record in records:
        instance.create_tick(TickData(
            instigator_origin_id=origin.get_id(), instigator_name=SCALER_SENSOR_NAME,
            instigator_type=InstigatorType.SENSOR, status=TickStatus.SKIPPED,
            timestamp=float(record["evaluated_at"]), cursor=json.dumps(record),
            selector_id=state.selector_id))
