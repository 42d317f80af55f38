"""The run-cost sensor: every finished run gets its cost once (tags + asset observations).

Watches runs that finished (success, failure, canceled) by update time; a run that already has an
``e2i/cost`` tag is skipped, so re-evaluations and restarts never count a run twice. OOM-killed
runs and their promotions are both costed. Budget and prices come from the instance's tiered
launcher (``run_launcher.config.tiers`` / ``prices``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
from dagster._core.storage.dagster_run import FINISHED_STATUSES, RunsFilter

from e2i_pipelines.monitoring.recording import budget_and_prices, record_run_cost

RUN_COST_SENSOR_NAME = "e2i_run_costs"
BATCH = 100
MAX_PER_TICK = 200
OVERLAP = 60.0


def cost_finished_runs(instance: dg.DagsterInstance, cursor: float | None,
                       max_costed: int = MAX_PER_TICK) -> tuple[int, float | None]:
    """Cost the runs finished since ``cursor`` (update time, epoch s); (runs costed, new cursor).

    Re-reads :data:`OVERLAP` before the cursor (update times are event times, and commits can
    land out of order); costed runs are skipped by their tag, so nothing is counted twice.
    """
    profiles, prices = budget_and_prices(instance)
    since = cursor - OVERLAP if cursor is not None else None
    costed = 0
    while costed < max_costed:
        records = instance.get_run_records(
            filters=RunsFilter(statuses=list(FINISHED_STATUSES),
                               updated_after=datetime.fromtimestamp(since, UTC) if since is not None else None),
            order_by="update_timestamp", ascending=True, limit=BATCH,
        )
        for record in records:
            if record_run_cost(instance, record, profiles, prices) is not None:
                costed += 1
            since = record.update_timestamp.timestamp()
            cursor = max(cursor or 0.0, since)
            if costed >= max_costed:
                break
        if len(records) < BATCH:
            break
    return costed, cursor


@dg.sensor(
    name=RUN_COST_SENSOR_NAME,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Tags each finished run with e2i/cost and e2i/cost_basis (tier budget x wall time)"
    " and observes the cost on the run's assets.",
)
def run_cost_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    cursor = float(context.cursor) if context.cursor else None
    costed, cursor = cost_finished_runs(context.instance, cursor)
    if cursor is not None:
        context.update_cursor(repr(cursor))
    return dg.SkipReason(f"costed {costed} finished run(s)")


cost_sensors = [run_cost_sensor]
