"""Refresh schedules (stopped by default; start them in the UI or with `dagster schedule start`).

Scheduled runs use the jobs' default config (synthetic demo data) unless E2I_SCHEDULE_RUN_CONFIG
names a run-config YAML (e.g. a ``dataset`` config pointing at the team's own Parquet file).
"""

import os
from pathlib import Path

import dagster as dg
import yaml

from e2i_pipelines.defs.orchestration.jobs import causal_job, feature_refresh_job


def scheduled_run_config() -> dict:
    """Run config from E2I_SCHEDULE_RUN_CONFIG (a YAML mapping), or {} for the defaults."""
    path = os.environ.get("E2I_SCHEDULE_RUN_CONFIG")
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise dg.DagsterInvariantViolationError(f"E2I_SCHEDULE_RUN_CONFIG {path!r} does not exist")
    config = yaml.safe_load(p.read_text()) or {}
    if not isinstance(config, dict):
        raise dg.DagsterInvariantViolationError(f"E2I_SCHEDULE_RUN_CONFIG {path!r} is not a mapping")
    return config


def _refresh_schedule(name: str, cron: str, job) -> dg.ScheduleDefinition:
    @dg.schedule(name=name, cron_schedule=cron, job=job, execution_timezone="UTC",
                 default_status=dg.DefaultScheduleStatus.STOPPED)
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(run_config=scheduled_run_config(), tags={"e2i/trigger": name})

    return _schedule


daily_feature_refresh = _refresh_schedule("daily_feature_refresh", "0 2 * * *", feature_refresh_job)
weekly_causal_refresh = _refresh_schedule("weekly_causal_refresh", "0 4 * * 1", causal_job)

schedules = [daily_feature_refresh, weekly_causal_refresh]
