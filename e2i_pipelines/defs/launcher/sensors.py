"""OOM promotion sensor: a run killed for memory is re-launched once at the next tier up.

Watches failed runs launched by a tiered launcher (Docker, Ray or Kubernetes). The OOM kill is
recorded on the run where the evidence lives: by the run worker itself
(:mod:`e2i_pipelines.launcher.run_worker` reads its container's or node's memory cgroup and writes
``e2i/failure=oom`` + the diagnosis, then ``e2i/worker_exit``) or by run monitoring in the daemon
when the whole worker died. The sensor only reads those tags: a failed run without either waits
(the cursor stays before it) for up to ``WORKER_RECORD_GRACE_SECONDS``; after that the launcher's
own diagnosis (``TieredLauncherMixin.diagnose_finished_run``) is tried once, for workers started
without the wrapper. It then re-launches the same assets with the same run config and the tag
``e2i/tier`` one tier up, tagged ``e2i/parent_run_id``. Not when the run was heavy, is itself a
promotion, or promotion is off (launcher config ``promote_on_oom: false`` or run tag
``e2i/promote_on_oom: false``). No Docker socket is needed where the sensor runs.
"""

import datetime
from collections.abc import Iterator

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus, RunsFilter

from e2i_pipelines.launcher.promotion import (
    FAILURE_TAG,
    WORKER_EXIT_TAG,
    decide_promotion,
    promoted_run_tags,
)
from e2i_pipelines.launcher.run_tier import planned_targets
from e2i_pipelines.launcher.tiered import TieredLauncherMixin

PROMOTION_RUN_KEY_PREFIX = "e2i-oom-promotion"
BATCH = 20
WORKER_RECORD_GRACE_SECONDS = 60.0
"""How long a failed run may wait for its worker's exit record before it is decided without."""


def awaiting_worker_record(run: DagsterRun, failed_at: float, now: float) -> bool:
    """True while a failed run has neither a recorded failure nor its worker's exit record and
    failed less than ``WORKER_RECORD_GRACE_SECONDS`` ago (the worker records after the run ends)."""
    if FAILURE_TAG in run.tags or WORKER_EXIT_TAG in run.tags:
        return False
    return now - failed_at < WORKER_RECORD_GRACE_SECONDS


def _promotion_request(
    context: dg.SensorEvaluationContext, launcher: TieredLauncherMixin, run: DagsterRun
) -> dg.RunRequest | None:
    if FAILURE_TAG not in run.tags and WORKER_EXIT_TAG not in run.tags:
        try:
            launcher.diagnose_finished_run(run, wait_seconds=0)
        except Exception as exc:  # noqa: BLE001 - engine unreachable (no socket, HTTP error)
            context.log.warning(f"run {run.run_id}: cannot inspect its worker ({exc})")
            return None
        run = context.instance.get_run_by_id(run.run_id) or run
    try:
        decision = decide_promotion(run.tags, launcher.promote_on_oom)
    except ValueError as exc:
        context.log.error(f"run {run.run_id}: not promoted: {exc}")
        return None
    if decision.tier is None:
        context.log.info(f"run {run.run_id}: not promoted ({decision.reason})")
        return None
    assets, checks = planned_targets(context.instance, run.run_id)
    if not assets and not checks:
        context.log.warning(f"run {run.run_id}: OOM-killed but planned no assets; not promoted")
        return None
    context.log.info(f"run {run.run_id}: {decision.reason}")
    return dg.RunRequest(
        run_key=f"{PROMOTION_RUN_KEY_PREFIX}:{run.run_id}",
        asset_selection=assets,
        asset_check_keys=checks,
        run_config=run.run_config,
        tags=promoted_run_tags(run.run_id, run.tags, decision.tier),
    )


PROMOTION_INTERVAL_SECONDS = 10
"""How often the promotion sensor looks for newly failed runs, in seconds."""


def build_oom_promotion_sensor(
    minimum_interval_seconds: int = PROMOTION_INTERVAL_SECONDS,
) -> dg.SensorDefinition:
    """The promotion sensor, evaluated at most every ``minimum_interval_seconds``."""

    @dg.sensor(
        name="e2i_oom_promotion_sensor",
        target=dg.AssetSelection.all(),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Re-launches an OOM-killed run once at the next tier up.",
    )
    def oom_promotion_sensor(
        context: dg.SensorEvaluationContext,
    ) -> Iterator[dg.RunRequest | dg.SkipReason]:
        yield from _promote_failed_runs(context)

    return oom_promotion_sensor


def _promote_failed_runs(context: dg.SensorEvaluationContext) -> Iterator[dg.RunRequest | dg.SkipReason]:
    """One evaluation: a promotion request per newly failed run that was OOM-killed."""
    launcher = context.instance.run_launcher
    if not isinstance(launcher, TieredLauncherMixin):
        yield dg.SkipReason("the instance does not use a tiered e2i run launcher")
        return
    now = datetime.datetime.now(datetime.UTC).timestamp()
    if not context.cursor:
        context.update_cursor(str(now))
        yield dg.SkipReason("watching run failures from now on")
        return
    since = datetime.datetime.fromtimestamp(float(context.cursor), datetime.UTC)
    records = context.instance.get_run_records(
        filters=RunsFilter(statuses=[DagsterRunStatus.FAILURE], updated_after=since),
        order_by="update_timestamp", ascending=True, limit=BATCH,
    )
    cursor = float(context.cursor)
    for record in records:
        run = record.dagster_run
        if launcher.owns_run(run) and awaiting_worker_record(run, record.update_timestamp.timestamp(), now):
            context.log.info(f"run {run.run_id}: waiting for its worker's exit record")
            break
        cursor = max(cursor, record.update_timestamp.timestamp())
        if not launcher.owns_run(run):
            continue
        request = _promotion_request(context, launcher, run)
        if request is not None:
            yield request
    context.update_cursor(str(cursor))


oom_promotion_sensor = build_oom_promotion_sensor()
launch_sensors = [oom_promotion_sensor]
