"""``run_costs``: a daily table and plot of what runs cost per job and tier (light tier).

Sums the ``e2i/cost`` tags of the runs that ended on the day (UTC), with what OOM-killed runs cost,
and the share of heavy capacity allowed by the scaler's cap that no heavy run used.
"""

import time

import dagster as dg

from e2i_pipelines.core.plots import png_metadata
from e2i_pipelines.defs.monitoring.config import RunCostsConfig
from e2i_pipelines.monitoring.cost import format_micros
from e2i_pipelines.monitoring.cost_report import cost_plot, day_costs
from e2i_pipelines.tiers import Tier, asset_tier_kwargs


@dg.asset(name="run_costs", group_name="costs", **asset_tier_kwargs(Tier.LIGHT),
          description="What the runs that ended on a day cost, per job and tier, and the heavy"
          " capacity idle under the scaler's cap.")
def run_costs(context: dg.AssetExecutionContext, config: RunCostsConfig) -> dg.MaterializeResult:
    now = time.time()
    day, start, end = config.window(now)
    report = day_costs(context.instance, start, end, now)
    total = report.total
    context.log.info(f"{day}: {total.runs} costed run(s), {format_micros(total.micros)}")
    columns = [dg.TableColumn("job"), dg.TableColumn("tier"), dg.TableColumn("runs", "int"),
               dg.TableColumn("cost"), dg.TableColumn("oom_runs", "int"), dg.TableColumn("oom_cost")]
    idle = report.idle.share
    return dg.MaterializeResult(metadata={
        "day": dg.MetadataValue.text(day.isoformat()),
        "currency": dg.MetadataValue.text(", ".join(sorted(report.currencies)) or "-"),
        "runs": dg.MetadataValue.int(total.runs),
        "total_cost": dg.MetadataValue.text(format_micros(total.micros)),
        "oom_cost": dg.MetadataValue.text(format_micros(total.oom_micros)),
        "costs": dg.MetadataValue.table(
            records=[dg.TableRecord(row) for row in report.rows()],
            schema=dg.TableSchema(columns=columns)),
        "heavy_cap_run_seconds": dg.MetadataValue.float(float(report.idle.cap_seconds)),
        "heavy_busy_run_seconds": dg.MetadataValue.float(float(report.idle.busy_seconds)),
        "heavy_idle_share": dg.MetadataValue.float(idle) if idle is not None
        else dg.MetadataValue.text("no heavy capacity allowed"),
        "plot": png_metadata(cost_plot(report, f"run costs {day}"), "run costs"),
    })


run_costs_job = dg.define_asset_job("run_costs_job", selection=[run_costs])

run_costs_daily = dg.ScheduleDefinition(
    name="run_costs_daily", cron_schedule="15 0 * * *", job=run_costs_job,
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Yesterday's run costs (light tier).",
)

cost_assets = [run_costs]
cost_jobs = [run_costs_job]
cost_schedules = [run_costs_daily]
