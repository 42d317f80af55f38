"""Start, list, follow, cancel runs and read their results."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Response

from e2i_api.api.deps import (
    CatalogDep,
    DagsterDep,
    FinishedResultsDep,
    KeyLocksDep,
    RunReaderDep,
    SettingsDep,
)
from e2i_api.core.security import Principal, require_scope
from e2i_api.idempotency import (
    CLIENT_TAG,
    IDEMPOTENCY_HEADER,
    KEY_PATTERN,
    fingerprint,
    launch_once,
)
from e2i_api.models import (
    EXAMPLE_RUN_ID,
    FINISHED_STATUSES,
    RUN_ID_PATTERN,
    CancelResult,
    ErrorResponse,
    RunAccepted,
    RunCreate,
    RunDetail,
    RunPage,
    RunResults,
    RunStatus,
)
from e2i_api.results import build_results, embedded_image, find_markdown
from e2i_api.run_store import RunReader
from e2i_api.run_tier import launch_tier
from e2i_api.run_views import failure_of, run_detail, tags_of, visible_run
from e2i_pipelines.core.data_root import DataScope
from e2i_pipelines.launcher.promotion import PARENT_RUN_TAG

ERRORS = {400: {"model": ErrorResponse, "description": "request body could not be decoded"},
          401: {"model": ErrorResponse, "description": "missing or invalid API key"},
          403: {"model": ErrorResponse, "description": "API key lacks the scope"},
          429: {"model": ErrorResponse, "description": "rate limit of the key reached (see Retry-After)"},
          503: {"model": ErrorResponse, "description": "Dagster is unavailable"}}
ARTIFACT_HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}
"""An artifact (an SVG may hold script) never runs in the API's origin."""
NOT_FOUND = {404: {"model": ErrorResponse, "description": "no such run"}}

router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=ERRORS)
read = require_scope("runs:read")
write = require_scope("runs:write")
RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, examples=[EXAMPLE_RUN_ID], description="Dagster run id")]


QUEUED_STATUSES = (RunStatus.QUEUED.value, RunStatus.NOT_STARTED.value)


async def check_queue_cap(reader: RunReader, client: str, cap: int) -> None:
    """429 when ``client`` already has ``cap`` runs waiting (QUEUED or NOT_STARTED)."""
    waiting = await reader.list_runs(tags={CLIENT_TAG: client}, statuses=QUEUED_STATUSES, limit=cap)
    if len(waiting) >= cap:
        raise HTTPException(429, f"API client {client!r} already has {len(waiting)} queued runs, the cap "
                                 f"(max_queued_runs_per_client={cap}); retry when some have started",
                            headers={"Retry-After": "30"})


@router.post("", status_code=202, response_model=RunAccepted, summary="Start a job",
             responses={403: {"model": ErrorResponse,
                              "description": "the key may not launch this job or its tier"},
                        404: {"model": ErrorResponse, "description": "unknown job"},
                        413: {"model": ErrorResponse, "description": "request body too large"},
                        429: {"model": ErrorResponse,
                              "description": "rate limit, or the client's queued-runs cap, reached"},
                        409: {"model": ErrorResponse,
                              "description": "the Idempotency-Key's first request is still launching"}})
async def create_run(
    body: RunCreate,
    response: Response,
    principal: Annotated[Principal, Depends(write)],
    dagster: DagsterDep,
    catalog: CatalogDep,
    locks: KeyLocksDep,
    reader: RunReaderDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(
        alias=IDEMPOTENCY_HEADER, pattern=KEY_PATTERN.pattern, examples=["3f6d2c1e-retry-safe"],
        description="1-200 printable ASCII characters without spaces; retrying with the same key "
                    "returns the run of the first request (waiting while it is still launching); "
                    "the same key with a different body is 422")] = None,
) -> RunAccepted:
    entry = catalog.get(body.job)
    tier, tier_tags = launch_tier(body, entry, principal)
    # Reads spec/graph files (confined to the key's data folder): off the event loop.
    validated = await asyncio.to_thread(
        entry.validate_params, body.params, DataScope(principal.name, principal.is_admin))
    run_config = entry.run_config(validated)
    tags = {**body.tags, **entry.run_tags(validated), **tier_tags, CLIENT_TAG: principal.name}

    async def launch(extra_tags: dict[str, str]) -> dict:
        await check_queue_cap(reader, principal.name, settings.max_queued_runs_per_client)
        return await dagster.launch_run(entry.name, run_config, {**tags, **extra_tags})

    if idempotency_key is None:
        run, replayed = await launch({}), False
    else:
        run, replayed = await launch_once(
            reader, locks, client_name=principal.name, key=idempotency_key,
            request_hash=fingerprint(entry.name, validated, {**body.tags, **tier_tags}), launch=launch)
    location = f"/v1/runs/{run['runId']}"
    response.headers["Location"] = location
    return RunAccepted(run_id=run["runId"], job=entry.name, status=RunStatus(run["status"]), tier=tier,
                       tier_mode="auto" if tier_tags else "declared", location=location, replayed=replayed)


@router.get("", response_model=RunPage, summary="List runs, newest first (the key's client's only, "
                                                "every client's for an admin key)")
async def list_runs(
    principal: Annotated[Principal, Depends(read)],
    dagster: DagsterDep,
    catalog: CatalogDep,
    settings: SettingsDep,
    status: Annotated[list[RunStatus] | None, Query(description="repeat to match any of several")] = None,
    job: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str | None, Query(pattern=RUN_ID_PATTERN, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> RunPage:
    limit = min(limit, settings.runs_page_limit)
    runs = await dagster.list_runs(job_name=job, statuses=[s.value for s in status or []], cursor=cursor,
                                   limit=limit, tags=principal.run_tags)
    return RunPage(runs=[run_detail(r, catalog) for r in runs],
                   next_cursor=runs[-1]["runId"] if len(runs) == limit else None)


@router.get("/{run_id}", response_model=RunDetail, summary="Status, tier, times and failure reason",
            responses=NOT_FOUND)
async def get_run(run_id: RunId, principal: Annotated[Principal, Depends(read)], dagster: DagsterDep,
                  reader: RunReaderDep, catalog: CatalogDep) -> RunDetail:
    run = visible_run(await reader.get_run(run_id), principal)
    failure = promoted_to = None
    if run["status"] == RunStatus.FAILURE:
        events = await dagster.run_events(run_id, frozenset({"RunFailureEvent", "ExecutionStepFailureEvent"}))
        failure = failure_of(tags_of(run), events)
        if failure.kind == "oom":
            children = await dagster.list_runs(tags={PARENT_RUN_TAG: run_id}, limit=1)
            promoted_to = children[0]["runId"] if children else None
    return run_detail(run, catalog, failure, promoted_to)


@router.post("/{run_id}/cancel", status_code=202, response_model=CancelResult, summary="Cancel a run",
             responses={**NOT_FOUND, 409: {"model": ErrorResponse, "description": "the run already finished"}})
async def cancel_run(run_id: RunId, principal: Annotated[Principal, Depends(write)],
                     dagster: DagsterDep) -> CancelResult:
    run = visible_run(await dagster.get_run(run_id), principal)
    if run["status"] in FINISHED_STATUSES:
        raise HTTPException(409, f"run {run_id} already finished with status {run['status']}")
    accepted, message, _ = await dagster.terminate_run(run_id, principal.name)  # e2i/terminated_by
    if not accepted:
        raise HTTPException(409, f"Dagster did not cancel run {run_id}: {message}")
    after = await dagster.get_run(run_id)  # the mutation's run object predates the status change
    return CancelResult(run_id=run_id, status=RunStatus(after["status"]), detail="cancellation requested")


@router.get("/{run_id}/results", response_model=RunResults, summary="Outputs of the run's assets and checks",
            responses=NOT_FOUND)
async def get_results(run_id: RunId, principal: Annotated[Principal, Depends(read)], dagster: DagsterDep,
                      reader: RunReaderDep, settings: SettingsDep, finished: FinishedResultsDep) -> RunResults:
    cached = finished.get(run_id)  # (the run's tags, its results)
    if cached is not None:
        visible_run({"runId": run_id, "tags": cached[0]}, principal)
        return cached[1]
    run = visible_run(await reader.get_run(run_id), principal)
    results = build_results(run, await dagster.run_events(run_id), settings.mlflow_tracking_uri)
    if run["status"] in FINISHED_STATUSES:  # read before its events: they are complete
        finished.put(run_id, (run["tags"], results))
    return results


@router.get("/{run_id}/artifacts", summary="A markdown or plot metadata entry of the run",
            responses={**NOT_FOUND, 200: {"content": {"image/png": {}, "text/markdown": {}},
                                          "description": "the embedded image, else the markdown"}},
            response_class=Response)
async def get_artifact(run_id: RunId, asset: Annotated[str, Query(min_length=1, max_length=500)],
                       label: Annotated[str, Query(min_length=1, max_length=500)],
                       principal: Annotated[Principal, Depends(read)], dagster: DagsterDep) -> Response:
    visible_run(await dagster.get_run(run_id), principal)
    markdown = find_markdown(await dagster.run_events(run_id, frozenset({"MaterializationEvent",
                                                                           "AssetCheckEvaluationEvent"})),
                             asset, label)
    if markdown is None:
        raise HTTPException(404, f"run {run_id} has no markdown/plot {label!r} on asset {asset!r}")
    image = embedded_image(markdown)
    if image:
        return Response(image[1], media_type=image[0], headers=ARTIFACT_HEADERS)
    return Response(markdown, media_type="text/markdown; charset=utf-8", headers=ARTIFACT_HEADERS)
