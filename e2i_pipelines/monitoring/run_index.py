"""What the exporter knows about each run, kept up to date from the run storage incrementally.

Each refresh reads only the runs updated since the last one (by update time), so a scrape costs
a query, not a scan. Runs that finished since the exporter started (or within ``backfill``
seconds before) are handed out once, for the duration and launch-to-first-step histograms; their
measured usage (``e2i/peak_memory``, ``e2i/cpu_utilisation``, written by the run worker just
after the run ends) is handed out once when it arrives (:meth:`RunIndex.take_usage`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import dagster as dg
from dagster._core.storage.dagster_run import RunRecord, RunsFilter

from e2i_pipelines.launcher.cgroup_usage import CPU_UTILISATION_TAG, PEAK_MEMORY_TAG, tag_number
from e2i_pipelines.launcher.promotion import FAILURE_TAG, PARENT_RUN_TAG, PROMOTED_FROM_TAG
from e2i_pipelines.launcher.run_tier import tier_for_run
from e2i_pipelines.monitoring.cost import COST_CURRENCY_TAG, COST_TAG, parse_micros
from e2i_pipelines.tiers import TIER_TAG, UnknownTierError

PAGE = 1000
NO_POOL = "none"
OVERLAP = timedelta(seconds=60)
"""Each refresh re-reads runs updated this long before the last one seen: update times come from
event timestamps and commits can land out of order, so a strict cursor could miss a run."""


@dataclass(frozen=True)
class RunFacts:
    """One run as the metrics see it."""

    job: str
    status: str
    tier: str
    pools: tuple[str, ...]
    created: float
    finished: bool
    oom: bool
    promoted_from: str | None
    cost_micros: int | None
    currency: str
    peak_bytes: int | None = None
    cpu_utilisation: float | None = None


def _tier(instance: dg.DagsterInstance, record: RunRecord, known: RunFacts | None) -> str:
    run = record.dagster_run
    if TIER_TAG in run.tags:
        return str(run.tags[TIER_TAG])
    if known is not None:
        return known.tier  # the plan does not change; read it once
    try:
        return tier_for_run(instance, run).tier.value
    except (UnknownTierError, ValueError):
        return "unknown"


def _cost(tags: dict[str, str]) -> int | None:
    try:
        return parse_micros(tags[COST_TAG]) if COST_TAG in tags else None
    except ValueError:
        return None


class RunIndex:
    """Run facts by run id, refreshed from the instance."""

    def __init__(self, backfill_seconds: float = 3600.0, now: float | None = None) -> None:
        self.runs: dict[str, RunFacts] = {}
        self._cursor: datetime | None = None
        self._observed: set[str] = set()
        self._usage_observed: set[str] = set()
        self._usage_ready: list[RunFacts] = []
        self._observe_after = (now if now is not None else time.time()) - backfill_seconds

    def refresh(self, instance: dg.DagsterInstance) -> list[RunRecord]:
        """Read runs updated since the last refresh; return those newly finished to observe."""
        finished: list[RunRecord] = []
        since = self._cursor - OVERLAP if self._cursor is not None else None
        while True:
            records = instance.get_run_records(
                filters=RunsFilter(updated_after=since), order_by="update_timestamp",
                ascending=True, limit=PAGE,
            )
            for record in records:
                finished += self._update(instance, record)
            if records:
                since = records[-1].update_timestamp
                self._cursor = max(self._cursor or since, since)
            if len(records) < PAGE:
                return finished

    def _update(self, instance: dg.DagsterInstance, record: RunRecord) -> list[RunRecord]:
        run = record.dagster_run
        tags = dict(run.tags)
        facts = RunFacts(
            job=run.job_name, status=run.status.value,
            tier=_tier(instance, record, self.runs.get(run.run_id)),
            pools=tuple(sorted(run.run_op_concurrency.all_pools)) if run.run_op_concurrency
            and run.run_op_concurrency.all_pools else (NO_POOL,),
            created=record.create_timestamp.timestamp(), finished=run.is_finished,
            oom=tags.get(FAILURE_TAG) == "oom",
            promoted_from=tags.get(PROMOTED_FROM_TAG) if PARENT_RUN_TAG in tags else None,
            cost_micros=_cost(tags), currency=tags.get(COST_CURRENCY_TAG, ""),
            peak_bytes=tag_number(tags, PEAK_MEMORY_TAG, int),
            cpu_utilisation=tag_number(tags, CPU_UTILISATION_TAG),
        )
        self.runs[run.run_id] = facts
        recent = record.end_time is not None and record.end_time >= self._observe_after
        if (recent and facts.finished and facts.peak_bytes is not None
                and run.run_id not in self._usage_observed):
            self._usage_observed.add(run.run_id)
            self._usage_ready.append(facts)
        if (facts.finished and run.run_id not in self._observed and record.end_time is not None
                and record.end_time >= self._observe_after):
            self._observed.add(run.run_id)
            return [record]
        return []

    def take_usage(self) -> list[RunFacts]:
        """Finished runs whose measured usage arrived since the last call (each once)."""
        ready, self._usage_ready = self._usage_ready, []
        return ready

