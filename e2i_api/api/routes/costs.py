"""GET /v1/costs: exact sums of the runs' ``e2i/cost`` tags per job, tier or day, with the waste of
the runs the worker measured: cost x (1 - memory utilisation) and the same for CPU.

A key sees the costs of its own client's runs (tag ``e2i/api-client``); an ``admin`` key sees
every run's, UI launches included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from e2i_api.api.deps import DagsterDep
from e2i_api.core.logging import logger
from e2i_api.core.security import Principal, require_scope
from e2i_api.models import ErrorResponse
from e2i_pipelines.monitoring.cost import (
    COST_CURRENCY_TAG,
    CostedRun,
    CostGroup,
    format_micros,
    sum_costs,
    total_of,
)

router = APIRouter(prefix="/v1/costs", tags=["costs"],
                   responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse},
                              429: {"model": ErrorResponse, "description": "rate limit of the key reached"},
                              502: {"model": ErrorResponse, "description": "Dagster answered with an error"},
                              503: {"model": ErrorResponse, "description": "Dagster is unavailable"}})

FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
PAGE = 500


class CostSum(BaseModel):
    """Summed cost of a group of runs (decimal text, 6 places: exact)."""

    key: str = Field(examples=["causal_job"])
    runs: int
    cost: str = Field(examples=["1.234567"])
    oom_runs: int = Field(description="runs OOM-killed (e2i/failure=oom); their cost is in cost")
    oom_cost: str = Field(description="what the OOM-killed runs cost")
    measured_runs: int = Field(0, description="runs with measured usage (the waste is theirs)")
    memory_waste: str = Field("0.000000", description="sum of cost x (1 - memory utilisation)")
    cpu_waste: str = Field("0.000000", description="sum of cost x (1 - CPU utilisation)")
    cpu_utilisation: str | None = Field(None, description="cost-weighted CPU utilisation of the measured runs")
    low_cpu: bool = Field(False, description="the measured runs used under 25 % of their CPUs")


class CostReport(BaseModel):
    """Costs of the runs that ended in [since, until)."""

    since: datetime
    until: datetime
    group_by: Literal["job", "tier", "day"]
    currency: str = Field(description="currency of the price table (mixed: comma-separated)")
    groups: list[CostSum]
    total: CostSum


def _sum(group: CostGroup) -> CostSum:
    used = group.cpu_utilisation
    return CostSum(key=group.key, runs=group.runs, cost=format_micros(group.micros),
                   oom_runs=group.oom_runs, oom_cost=format_micros(group.oom_micros),
                   measured_runs=group.measured_runs,
                   memory_waste=format_micros(group.memory_waste_micros),
                   cpu_waste=format_micros(group.cpu_waste_micros),
                   cpu_utilisation=None if used is None else f"{used:.3f}", low_cpu=group.low_cpu)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get("", response_model=CostReport, summary="Run costs summed per job, tier or day (the key's "
                                                   "client's runs; every run for an admin key)",
            responses={422: {"description": "since/until/group_by invalid"}})
async def get_costs(
    principal: Annotated[Principal, Depends(require_scope("runs:read"))],
    dagster: DagsterDep,
    since: Annotated[datetime | None, Query(description="start (ISO 8601; default until - 7 days)")] = None,
    until: Annotated[datetime | None, Query(description="end, exclusive (ISO 8601; default now)")] = None,
    group_by: Annotated[Literal["job", "tier", "day"], Query(description="day = UTC day the run ended")] = "day",
) -> CostReport:
    try:
        end = _utc(until) if until else datetime.now(UTC)
        start = _utc(since) if since else end - timedelta(days=7)
    except OverflowError:
        raise HTTPException(422, "since/until out of range") from None
    if start >= end:
        raise HTTPException(422, "since must be before until")
    t0, t1 = start.timestamp(), end.timestamp()
    costed: list[CostedRun] = []
    currencies: set[str] = set()
    cursor = None
    while True:  # a run is updated when it ends and when it is costed: both after t0
        page = await dagster.list_runs(statuses=FINISHED, updated_after=t0, cursor=cursor, limit=PAGE,
                                       tags=principal.run_tags)
        for run in page:
            ended = run.get("endTime")
            if ended is None or not t0 <= ended < t1:
                continue
            tags = {tag["key"]: tag["value"] for tag in run["tags"]}
            try:
                item = CostedRun.from_tags(run["runId"], run["jobName"], tags, ended)
            except ValueError as exc:
                logger.warning("run cost not summed", extra={"run_id": run["runId"], "error": str(exc)})
                continue
            if item is not None:
                costed.append(item)
                currencies.add(tags.get(COST_CURRENCY_TAG, "?"))
        if len(page) < PAGE:
            break
        cursor = page[-1]["runId"]
    groups = sum_costs(costed, group_by)
    total = total_of(groups)
    return CostReport(since=start, until=end, group_by=group_by, currency=", ".join(sorted(currencies)) or "-",
                      groups=[_sum(g) for g in groups], total=_sum(total))
