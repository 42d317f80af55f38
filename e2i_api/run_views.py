"""Run fields from GraphQL as API models: status, tier, times and the failure reason (OOM aware)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from e2i_api.core.security import Principal
from e2i_api.dagster_client import RunNotFound
from e2i_api.models import RunDetail, RunFailure, RunStatus, StepUsage
from e2i_pipelines.catalog import Catalog
from e2i_pipelines.launcher.cgroup_usage import (
    CPU_SECONDS_TAG,
    CPU_UTILISATION_TAG,
    MEMORY_UTILISATION_TAG,
    PEAK_MEMORY_TAG,
    tag_number,
)
from e2i_pipelines.launcher.promotion import (
    FAILURE_REASON_TAG,
    FAILURE_TAG,
    PARENT_PREDICTED_PEAK_TAG,
    PARENT_RUN_TAG,
    PREDICTED_PEAK_TAG,
    TIER_BASIS_TAG,
    TIER_SOURCE_TAG,
)
from e2i_pipelines.launcher.step_inputs import STEP_INPUTS_TAG
from e2i_pipelines.launcher.step_usage import PEAK_STEP_TAG, as_number
from e2i_pipelines.tiers import Tier, UnknownTierError, tier_of_tags

_FINISHED = {RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.CANCELED}

_OOM = re.compile(r"\boom\b|oom[-_ ]?kill|out of memory", re.IGNORECASE)


def tags_of(run: Mapping[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run.get("tags", [])}


def visible_run(run: Mapping[str, Any], principal: Principal) -> Mapping[str, Any]:
    """``run`` when ``principal`` may see it, else ``RunNotFound`` (the same 404 as a missing run)."""
    if not principal.owns(tags_of(run)):
        raise RunNotFound(f"no run {run['runId']!r}")
    return run


def _time(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


def run_tier(tags: Mapping[str, str], job: str, catalog: Catalog) -> Tier | None:
    """The tier recorded on the run (``e2i/tier``), else the catalog tier of its job."""
    try:
        tier = tier_of_tags(tags)
    except UnknownTierError:
        tier = None
    if tier is None and job in catalog:
        tier = catalog.get(job).tier
    return tier


def first_line(text: str | None, limit: int = 500) -> str:
    """The first line of an error text that is not a traceback line (no stack, no log tail)."""
    for line in (text or "").splitlines():
        line = line.strip()
        if line and not line.startswith(("Traceback", "File ", "Stack Trace")):
            return line[:limit]
    return ""


def failure_of(tags: Mapping[str, str], events: list[Mapping[str, Any]]) -> RunFailure:
    """Failure reason from the run's failure events and its ``e2i/failure`` tag."""
    run_messages, step_messages = [], []
    for event in events:
        error = first_line((event.get("error") or {}).get("message")) or None
        if event["__typename"] == "RunFailureEvent":
            run_messages.append(" ".join(m for m in (first_line(event.get("message")), error) if m).strip())
        elif event["__typename"] == "ExecutionStepFailureEvent":
            step_messages.append(f"{event.get('stepKey')}: {error or first_line(event.get('message'))}")
    tag, reason = tags.get(FAILURE_TAG), tags.get(FAILURE_REASON_TAG)
    message = (reason or "; ".join(run_messages) or "; ".join(step_messages)
               or (f"{FAILURE_TAG}={tag}" if tag else "run failed"))
    texts = [tag or "", reason or "", *run_messages, *step_messages]
    kind = "oom" if tag == "oom" or any(_OOM.search(t) for t in texts) else "error"
    return RunFailure(kind=kind, message=message, failure_tag=tag, step_failures=step_messages)


def measured_usage(tags: Mapping[str, str], status: RunStatus) -> dict[str, Any]:
    """The run worker's measured usage, once the run ended (unreadable tags are left out)."""
    if status not in _FINISHED:
        return {}
    tags = dict(tags)
    return {"peak_memory": tag_number(tags, PEAK_MEMORY_TAG, int),
            "cpu_seconds": tag_number(tags, CPU_SECONDS_TAG),
            "memory_utilisation": tag_number(tags, MEMORY_UTILISATION_TAG),
            "cpu_utilisation": tag_number(tags, CPU_UTILISATION_TAG)}


def step_usage(tags: Mapping[str, str], status: RunStatus) -> dict[str, Any]:
    """Each step's measured peak, CPU and wall time from ``e2i/step_inputs``, and the step with
    the largest peak, once the run ended (an unreadable tag or entry is left out)."""
    if status not in _FINISHED:
        return {}
    try:
        recorded = json.loads(tags.get(STEP_INPUTS_TAG) or "{}")
    except ValueError:
        recorded = {}
    steps = [StepUsage(step=step, peak_memory=as_number(found.get("peak_memory_bytes"), int),
                       cpu_seconds=as_number(found.get("cpu_seconds")),
                       wall_seconds=as_number(found.get("wall_seconds")))
             for step, found in (recorded.items() if isinstance(recorded, dict) else ())
             if isinstance(found, dict)]
    peak_step = tags.get(PEAK_STEP_TAG)
    return {"steps": steps, "peak_step": peak_step if peak_step in {s.step for s in steps} else None}


def tier_choice(tags: Mapping[str, str]) -> dict[str, Any]:
    """Why the run has its tier: the launcher's source, and tier auto's prediction and basis."""
    tags = dict(tags)
    return {"tier_source": tags.get(TIER_SOURCE_TAG), "tier_basis": tags.get(TIER_BASIS_TAG),
            "predicted_peak": tag_number(tags, PREDICTED_PEAK_TAG, int),
            "parent_predicted_peak": tag_number(tags, PARENT_PREDICTED_PEAK_TAG, int)}


def run_detail(run: Mapping[str, Any], catalog: Catalog, failure: RunFailure | None = None,
               promoted_to: str | None = None) -> RunDetail:
    tags = tags_of(run)
    status = RunStatus(run["status"])
    return RunDetail(
        run_id=run["runId"], job=run["jobName"], status=status,
        tier=run_tier(tags, run["jobName"], catalog),
        created_at=_time(run.get("creationTime")), started_at=_time(run.get("startTime")),
        ended_at=_time(run.get("endTime")), tags=tags, can_cancel=bool(run.get("canTerminate")),
        failure=failure, promoted_from=tags.get(PARENT_RUN_TAG), promoted_to=promoted_to,
        **measured_usage(tags, status), **step_usage(tags, status), **tier_choice(tags),
    )
