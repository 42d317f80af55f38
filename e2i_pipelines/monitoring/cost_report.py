"""A day of run costs from the instance: per job x tier sums with their memory and CPU waste, the
jobs that waste most, jobs that leave their CPUs idle, plots, and heavy idle share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg
from dagster._core.storage.dagster_run import FINISHED_STATUSES, DagsterRunStatus, RunsFilter

from e2i_pipelines.monitoring.cost import (
    COST_CURRENCY_TAG,
    CostedRun,
    CostGroup,
    format_micros,
    total_of,
)
from e2i_pipelines.monitoring.scaler_history import IdleShare, cap_timeline, idle_share
from e2i_pipelines.tiers import TIER_TAG, Tier


def _records(instance: dg.DagsterInstance, statuses: list[DagsterRunStatus], since: float):
    return instance.get_run_records(filters=RunsFilter(
        statuses=statuses, updated_after=datetime.fromtimestamp(since, UTC)))


def costed_runs(instance: dg.DagsterInstance, start: float, end: float) -> tuple[list[CostedRun], set[str]]:
    """Costed runs that ended in [start, end), and the currencies they were costed in."""
    runs, currencies = [], set()
    for record in _records(instance, list(FINISHED_STATUSES), start):
        if record.end_time is None or not start <= record.end_time < end:
            continue
        run = record.dagster_run
        try:
            costed = CostedRun.from_tags(run.run_id, run.job_name, run.tags, record.end_time)
        except ValueError:
            continue  # a hand-edited e2i/cost tag: not ours to sum
        if costed is not None:
            runs.append(costed)
            currencies.add(run.tags.get(COST_CURRENCY_TAG, "?"))
    return runs, currencies


def heavy_busy_intervals(instance: dg.DagsterInstance, start: float, end: float,
                         now: float) -> list[tuple[float, float]]:
    """(start, end) of heavy runs that overlap [start, end); a run still going ends ``now``."""
    statuses = [*FINISHED_STATUSES, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
    intervals = []
    for record in instance.get_run_records(filters=RunsFilter(statuses=statuses, tags={TIER_TAG: Tier.HEAVY.value})):
        if record.start_time is None:
            continue
        stop = record.end_time if record.end_time is not None else now
        if record.start_time < end and stop > start:
            intervals.append((record.start_time, stop))
    return intervals


@dataclass
class DayCosts:
    """One window's sums per (job, tier), its total and the heavy idle share."""

    start: float
    end: float
    groups: dict[tuple[str, str], CostGroup] = field(default_factory=dict)
    currencies: set[str] = field(default_factory=set)
    idle: IdleShare = field(default_factory=lambda: IdleShare(0.0, 0.0))
    peaks: dict[tuple[str, str], int] = field(default_factory=dict)
    """Highest measured peak memory per (job, tier)."""

    @property
    def total(self) -> CostGroup:
        return total_of(self.groups.values())

    def rows(self) -> list[dict[str, object]]:
        return [{"job": job, "tier": tier, "runs": g.runs, "cost": format_micros(g.micros),
                 "oom_runs": g.oom_runs, "oom_cost": format_micros(g.oom_micros),
                 "measured_runs": g.measured_runs,
                 "memory_waste": format_micros(g.memory_waste_micros),
                 "cpu_waste": format_micros(g.cpu_waste_micros),
                 "cpu_utilisation": "-" if g.cpu_utilisation is None else f"{g.cpu_utilisation:.3f}",
                 "low_cpu": g.low_cpu}
                for (job, tier), g in sorted(self.groups.items())]

    def jobs(self) -> list[CostGroup]:
        """Sums per job (all tiers)."""
        jobs: dict[str, CostGroup] = {}
        for (job, _), group in self.groups.items():
            jobs.setdefault(job, CostGroup(job)).merge(group)
        return list(jobs.values())

    def top_waste(self, n: int = 5) -> list[CostGroup]:
        """The ``n`` jobs that wasted most (memory + CPU), most first; only jobs with waste."""
        wasting = [g for g in self.jobs() if g.waste_micros > 0]
        return sorted(wasting, key=lambda g: (-g.waste_micros, g.key))[:n]

    def low_cpu_jobs(self) -> list[str]:
        """Jobs whose measured runs used under 25 % of their CPUs (cost-weighted)."""
        return sorted(g.key for g in self.jobs() if g.low_cpu)


def day_costs(instance: dg.DagsterInstance, start: float, end: float, now: float) -> DayCosts:
    """Sums per job x tier of the runs that ended in [start, end), and heavy idle share."""
    runs, currencies = costed_runs(instance, start, end)
    report = DayCosts(start=start, end=end, currencies=currencies)
    for run in runs:
        key = (run.job, run.tier)
        report.groups.setdefault(key, CostGroup(f"{run.job}/{run.tier}")).add(run)
        if run.peak_bytes is not None:
            report.peaks[key] = max(report.peaks.get(key, 0), run.peak_bytes)
    window_end = min(end, now)
    report.idle = idle_share(cap_timeline(instance, start, window_end),
                             heavy_busy_intervals(instance, start, window_end, now), start, window_end)
    return report


def cost_plot(report: DayCosts, title: str) -> bytes:
    """Horizontal bars: cost per job, stacked by tier; OOM-killed runs' share hatched."""
    import matplotlib.pyplot as plt

    from e2i_pipelines.core.plots import figure_png

    jobs = sorted({job for job, _ in report.groups})
    fig, ax = plt.subplots(figsize=(7, 0.5 * max(len(jobs), 2) + 1.2))
    left = [0.0] * len(jobs)
    colours = {"light": "#9ecae1", "medium": "#4292c6", "heavy": "#08519c", "unknown": "#bbbbbb"}
    for tier in [*(t.value for t in Tier), "unknown"]:
        values = [report.groups[(job, tier)].micros / 1e6 if (job, tier) in report.groups else 0.0
                  for job in jobs]
        oom = [report.groups[(job, tier)].oom_micros / 1e6 if (job, tier) in report.groups else 0.0
               for job in jobs]
        if not any(values):
            continue
        ax.barh(jobs, values, left=left, color=colours[tier], label=tier)
        ax.barh(jobs, oom, left=left, color="none", hatch="//", edgecolor="#d62728", linewidth=0)
        left = [a + b for a, b in zip(left, values, strict=True)]
    currency = ", ".join(sorted(report.currencies)) or "-"
    ax.set_xlabel(f"cost ({currency}); hatched: OOM-killed runs")
    ax.set_title(title)
    if jobs:
        ax.legend(title="tier", loc="lower right")
    else:
        ax.text(0.5, 0.5, "no costed runs", ha="center", va="center", transform=ax.transAxes)
    return figure_png(fig)


def budget_plot(report: DayCosts, budgets: Mapping[str, int], title: str) -> bytes:
    """Per job and tier: the tier's memory budget and the highest peak its runs measured (GiB)."""
    import matplotlib.pyplot as plt

    from e2i_pipelines.core.plots import figure_png

    keys = sorted(k for k in report.peaks if k[1] in budgets)
    labels = [f"{job} ({tier})" for job, tier in keys]
    fig, ax = plt.subplots(figsize=(7, 0.5 * max(len(keys), 2) + 1.2))
    gib = 1024**3
    ax.barh(labels, [budgets[tier] / gib for _, tier in keys], color="#dddddd", label="budget")
    ax.barh(labels, [report.peaks[k] / gib for k in keys], height=0.4, color="#08519c", label="peak")
    ax.set_xlabel("memory (GiB)")
    ax.set_title(title)
    if keys:
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "no measured runs", ha="center", va="center", transform=ax.transAxes)
    return figure_png(fig)
