"""Finished runs of known tier, job and wall time, written through the instance's event log."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._core.utils import make_new_run_id

from e2i_pipelines.tiers import TIER_TAG

_END = {DagsterRunStatus.SUCCESS: DagsterEventType.RUN_SUCCESS,
        DagsterRunStatus.FAILURE: DagsterEventType.RUN_FAILURE,
        DagsterRunStatus.CANCELED: DagsterEventType.RUN_CANCELED}


def _event(instance: dg.DagsterInstance, run: DagsterRun, kind: DagsterEventType, ts: float,
           asset: dg.AssetKey | None = None) -> None:
    specific = None
    if kind == DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
        from dagster._core.events import AssetMaterializationPlannedData

        specific = AssetMaterializationPlannedData(asset_key=asset)
    event = DagsterEvent(event_type_value=kind.value, job_name=run.job_name,
                         event_specific_data=specific)
    instance.handle_new_event(EventLogEntry(
        error_info=None, level="DEBUG", user_message="", run_id=run.run_id, timestamp=ts,
        dagster_event=event,
    ))


def add_run(instance: dg.DagsterInstance, job: str, tier: str | None, *, start: float | None,
            seconds: float | None, status: DagsterRunStatus = DagsterRunStatus.SUCCESS,
            tags: Mapping[str, str] | None = None, assets: tuple[str, ...] = (),
            first_step_after: float | None = None, launched_before: float = 0.0) -> str:
    """A run of ``job`` at ``tier`` that ran ``seconds`` from ``start`` and ended in ``status``.

    ``start=None``: the run never started (only its end is recorded, at now).
    ``first_step_after``: a STEP_START that many seconds after RUN_STARTING (which is
    ``launched_before`` seconds before ``start``).
    """
    all_tags = {**({TIER_TAG: tier} if tier else {}), **(tags or {})}
    run = instance.add_run(DagsterRun(job_name=job, run_id=make_new_run_id(), tags=all_tags,
                                      status=DagsterRunStatus.NOT_STARTED))
    t0 = start if start is not None else 1.7e9
    for key in assets:
        _event(instance, run, DagsterEventType.ASSET_MATERIALIZATION_PLANNED, t0 - 1, dg.AssetKey(key))
    if start is not None:
        _event(instance, run, DagsterEventType.RUN_STARTING, start - launched_before)
        _event(instance, run, DagsterEventType.RUN_START, start)
        if first_step_after is not None:
            _event(instance, run, DagsterEventType.STEP_START, start - launched_before + first_step_after)
        _event(instance, run, _END[status], start + seconds)
    else:
        _event(instance, run, _END[status], t0)
    return run.run_id
