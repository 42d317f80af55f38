"""``run_costs``: a daily table and plot of what runs cost per job and tier (light tier).

Sums the ``e2i/cost`` tags of the runs that ended on the day (UTC), with what OOM-killed runs cost,
and the share of heavy capacity allowed by the scaler's cap that no heavy run used. Runs the worker
measured add their waste (cost x (1 - memory / CPU utilisation)); the jobs that wasted most are
named, a job using under 25 % of its CPUs is flagged, and a plot shows budget against peak.
"""

import time

import dagster as dg

from e2i_pipelines.core.plots import png_metadata
from e2i_pipelines.defs.monitoring.config import RunCostsConfig
from e2i_pipelines.monitoring.cost import format_micros
from e2i_pipelines.monitoring.cost_report import budget_plot, cost_plot, day_costs
from e2i_pipelines.monitoring.recording import budget_and_prices
from e2i_pipelines.tiers import Tier, asset_tier_kwargs, parse_bytes


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
               dg.TableColumn("cost"), dg.TableColumn("oom_runs", "int"), dg.TableColumn("oom_cost"),
               dg.TableColumn("measured_runs", "int"), dg.TableColumn("memory_waste"),
               dg.TableColumn("cpu_waste"), dg.TableColumn("cpu_utilisation"),
               dg.TableColumn("low_cpu", "bool")]
    idle = report.idle.share
    profiles, _ = budget_and_prices(context.instance)
    budgets = {tier.value: parse_bytes(profile.memory) for tier, profile in profiles.items()}
    top = report.top_waste()
    return dg.MaterializeResult(metadata={
        "day": dg.MetadataValue.text(day.isoformat()),
        "currency": dg.MetadataValue.text(", ".join(sorted(report.currencies)) or "-"),
        "runs": dg.MetadataValue.int(total.runs),
        "total_cost": dg.MetadataValue.text(format_micros(total.micros)),
        "oom_cost": dg.MetadataValue.text(format_micros(total.oom_micros)),
        "memory_waste": dg.MetadataValue.text(format_micros(total.memory_waste_micros)),
        "cpu_waste": dg.MetadataValue.text(format_micros(total.cpu_waste_micros)),
        "top_waste": dg.MetadataValue.text(
            ", ".join(f"{g.key} {format_micros(g.waste_micros)}" for g in top) or "no measured waste"),
        "low_cpu_jobs": dg.MetadataValue.text(", ".join(report.low_cpu_jobs()) or "none"),
        "costs": dg.MetadataValue.table(
            records=[dg.TableRecord(row) for row in report.rows()],
            schema=dg.TableSchema(columns=columns)),
        "heavy_cap_run_seconds": dg.MetadataValue.float(float(report.idle.cap_seconds)),
        "heavy_busy_run_seconds": dg.MetadataValue.float(float(report.idle.busy_seconds)),
        "heavy_idle_share": dg.MetadataValue.float(idle) if idle is not None
        else dg.MetadataValue.text("no heavy capacity allowed"),
        "plot": png_metadata(cost_plot(report, f"run costs {day}"), "run costs"),
        "budget_plot": png_metadata(budget_plot(report, budgets, f"memory budget vs peak {day}"),
                                    "budget vs peak"),
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
