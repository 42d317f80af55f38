"""Test helpers: create real queued runs of the e2i jobs on an instance, move them along."""

import dagster as dg
from dagster import DagsterEvent, DagsterEventType, DagsterRunStatus
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from e2i_pipelines.definitions import defs


def job_origin(job_name: str) -> RemoteJobOrigin:
    """Origin of ``job_name`` in the e2i code location (queued runs must carry one)."""
    location = InProcessCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(module_name="e2i_pipelines.definitions"),
        location_name="e2i",
    )
    return RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(location, "__repository__"), job_name=job_name
    )


def queue_run(instance: dg.DagsterInstance, job_name: str) -> dg.DagsterRun:
    """A QUEUED run of ``job_name`` with its real execution plan (so pool tags are real)."""
    return instance.create_run_for_job(
        job_def=defs.resolve_job_def(job_name), status=DagsterRunStatus.QUEUED,
        remote_job_origin=job_origin(job_name),
    )


def report(instance: dg.DagsterInstance, run: dg.DagsterRun, event: DagsterEventType) -> None:
    """Record a run lifecycle event (RUN_START, RUN_SUCCESS, ...), updating the run status."""
    instance.report_dagster_event(DagsterEvent(event.value, job_name=run.job_name), run_id=run.run_id)
