"""The platform's Prometheus exporter: reads the Dagster instance on each scrape (no daemon patch).

Metrics: runs by status x tier x job; queue depth and oldest queued age per pool; pool limits;
the heavy cap and each input the scaler computed it from (its last decision, from the sensor's
cursor); launch -> first step and run duration histograms by tier; OOM kills by tier and
promotions; run costs; measured peak memory and CPU utilisation of finished runs by tier and job
(histograms); daemon heartbeats. Run with ``python -m e2i_pipelines.monitoring``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator

import dagster as dg
from dagster._core.events import DagsterEventType
from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from e2i_pipelines.monitoring.run_index import NO_POOL, RunIndex
from e2i_pipelines.monitoring.scaler_history import latest_decision
from e2i_pipelines.tiers import TIER_NAMES, Tier

log = logging.getLogger("e2i.exporter")
DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
PEAK_MEMORY_BUCKETS = tuple(2.0**n * 1024**2 for n in range(6, 17))  # 64 MiB .. 64 GiB
UTILISATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.5)
POOLS = (NO_POOL, *(tier.pool for tier in Tier if tier.pool))
HEAVY_INPUTS = {"demand": "demand", "capacity": "capacity_slots", "min": "min_heavy_runs",
                "max": "max_heavy_runs", "queued": "queued", "running": "running"}


def launch_to_first_step(instance: dg.DagsterInstance, run_id: str) -> float | None:
    """Seconds from the run's RUN_STARTING (launch) to its first STEP_START; None if either is missing."""
    launched = step = None
    for record in instance.get_records_for_run(
        run_id, of_type={DagsterEventType.RUN_STARTING, DagsterEventType.STEP_START}, limit=200,
    ).records:
        kind = record.event_log_entry.dagster_event_type
        if kind == DagsterEventType.RUN_STARTING and launched is None:
            launched = record.timestamp
        elif kind == DagsterEventType.STEP_START and step is None:
            step = record.timestamp
    return step - launched if launched is not None and step is not None else None


class PlatformCollector(Collector):
    """Collects the platform's metrics from ``instance`` at each scrape (thread-safe)."""

    def __init__(self, instance: dg.DagsterInstance, backfill_seconds: float = 3600.0) -> None:
        self.instance = instance
        self.index = RunIndex(backfill_seconds)
        self._lock = threading.Lock()
        self.duration = Histogram("e2i_run_duration_seconds", "Wall time of finished runs, start to end.",
                                  ["tier"], buckets=DURATION_BUCKETS, registry=None)
        self.first_step = Histogram("e2i_run_launch_to_first_step_seconds",
                                    "Seconds from a run's launch to its first step starting.",
                                    ["tier"], buckets=LATENCY_BUCKETS, registry=None)
        self.peak_memory = Histogram("e2i_run_peak_memory_bytes",
                                     "Measured peak memory of finished runs (e2i/peak_memory).",
                                     ["tier", "job"], buckets=PEAK_MEMORY_BUCKETS, registry=None)
        self.cpu_utilisation = Histogram("e2i_run_cpu_utilisation",
                                         "CPU time of finished runs over their CPUs x wall time.",
                                         ["tier", "job"], buckets=UTILISATION_BUCKETS, registry=None)
        for tier in TIER_NAMES:  # every tier has a series from the first scrape
            self.duration.labels(tier)
            self.first_step.labels(tier)

    def describe(self) -> list[Metric]:
        return []  # collected dynamically; no registration-time scrape of the instance

    def _observe(self) -> None:
        for record in self.index.refresh(self.instance):
            facts = self.index.runs[record.dagster_run.run_id]
            if record.start_time is not None:
                self.duration.labels(facts.tier).observe(record.end_time - record.start_time)
            latency = launch_to_first_step(self.instance, record.dagster_run.run_id)
            if latency is not None:
                self.first_step.labels(facts.tier).observe(latency)
        for facts in self.index.take_usage():
            self.peak_memory.labels(facts.tier, facts.job).observe(facts.peak_bytes)
            if facts.cpu_utilisation is not None:
                self.cpu_utilisation.labels(facts.tier, facts.job).observe(facts.cpu_utilisation)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            started = time.perf_counter()
            try:
                self._observe()
                yield from self._instance_metrics()
                up = 1.0
            except Exception:  # noqa: BLE001 - storage down: say so, keep serving the rest
                log.exception("reading the Dagster instance failed")
                up = 0.0
            yield from self._run_metrics()
            yield from self.duration.collect()
            yield from self.first_step.collect()
            yield from self.peak_memory.collect()
            yield from self.cpu_utilisation.collect()
            yield GaugeMetricFamily("e2i_exporter_instance_up",
                                    "1 when the last scrape read the Dagster instance.", value=up)
            yield GaugeMetricFamily("e2i_exporter_scrape_duration_seconds",
                                    "Time this exporter took to read the instance.",
                                    value=time.perf_counter() - started)

    def _run_metrics(self) -> Iterator[Metric]:
        runs = list(self.index.runs.values())
        by_status = GaugeMetricFamily("e2i_runs", "Runs in the instance by status, tier and job.",
                                      labels=["status", "tier", "job_name"])
        for (status, tier, job), n in sorted(Counter((r.status, r.tier, r.job) for r in runs).items()):
            by_status.add_metric([status, tier, job], n)
        yield by_status

        now = time.time()
        queued = [r for r in runs if r.status == "QUEUED"]
        depth = GaugeMetricFamily("e2i_run_queue_depth", "Queued runs per pool (none: no pool).",
                                  labels=["pool"])
        oldest = GaugeMetricFamily("e2i_run_queue_oldest_age_seconds",
                                   "Age of the oldest queued run per pool (0: queue empty).", labels=["pool"])
        pools = sorted(set(POOLS) | {p for r in queued for p in r.pools})
        for pool in pools:
            waiting = [r for r in queued if pool in r.pools]
            depth.add_metric([pool], len(waiting))
            oldest.add_metric([pool], max((now - r.created for r in waiting), default=0.0))
        yield depth
        yield oldest

        oom = CounterMetricFamily("e2i_oom_kills", "Runs OOM-killed (e2i/failure=oom), by tier.",
                                  labels=["tier"])
        counts = Counter(r.tier for r in runs if r.oom)
        for tier in sorted(set(TIER_NAMES) | set(counts)):
            oom.add_metric([tier], counts.get(tier, 0))
        yield oom
        promotions = CounterMetricFamily("e2i_run_promotions", "OOM promotions: runs re-launched one tier up.",
                                         labels=["from_tier", "to_tier"])
        for (source, target), n in sorted(Counter((r.promoted_from, r.tier) for r in runs
                                                  if r.promoted_from).items()):
            promotions.add_metric([source, target], n)
        yield promotions
        cost = CounterMetricFamily("e2i_run_cost", "Summed e2i/cost of finished runs, by tier and job.",
                                   labels=["tier", "job_name", "currency"])
        totals: Counter = Counter()
        for r in runs:
            if r.cost_micros is not None:
                totals[(r.tier, r.job, r.currency)] += r.cost_micros
        for labels, micros in sorted(totals.items()):
            cost.add_metric(list(labels), micros / 1e6)
        yield cost

    def _instance_metrics(self) -> Iterator[Metric]:
        limits = GaugeMetricFamily("e2i_pool_limit", "Concurrency limit of each pool.", labels=["pool"])
        for limit in self.instance.event_log_storage.get_pool_limits():
            limits.add_metric([limit.name], limit.limit)
        yield limits

        record = latest_decision(self.instance)
        if record is not None:
            decision = record["decision"]
            yield GaugeMetricFamily("e2i_heavy_cap", "Heavy runs allowed at once (the scaler's last decision).",
                                    value=decision["allowed"])
            inputs = GaugeMetricFamily("e2i_heavy_cap_input", "Inputs of the scaler's last decision.",
                                       labels=["input"])
            for name, key in HEAVY_INPUTS.items():
                if decision.get(key) is not None:  # capacity is not measured without demand
                    inputs.add_metric([name], decision[key])
            yield inputs
            bound = GaugeMetricFamily("e2i_heavy_cap_bound_by", "1 for the input that set the cap.",
                                      labels=["input"])
            for name in ("demand", "capacity", "min", "max"):
                bound.add_metric([name], 1.0 if decision["bound_by"] == name else 0.0)
            yield bound
            yield GaugeMetricFamily("e2i_heavy_cap_decision_timestamp_seconds",
                                    "When the scaler last decided.", value=record["evaluated_at"])

        beats = GaugeMetricFamily("e2i_daemon_heartbeat_timestamp_seconds",
                                  "Last heartbeat of each Dagster daemon.", labels=["daemon"])
        for daemon, beat in sorted(self.instance.get_daemon_heartbeats().items()):
            beats.add_metric([daemon], beat.timestamp)
        yield beats
