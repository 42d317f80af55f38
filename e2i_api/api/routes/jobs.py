"""The launchable jobs: tiers, assets and JSON parameter schema from the catalog."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from e2i_api.api.deps import CatalogDep
from e2i_api.core.security import require_scope
from e2i_api.models import AssetInfo, ErrorResponse, JobList, JobSummary
from e2i_pipelines.catalog import CatalogEntry

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_scope("runs:read"))],
                   responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse},
                              429: {"model": ErrorResponse, "description": "rate limit of the key reached"}})


def job_summary(entry: CatalogEntry) -> JobSummary:
    return JobSummary(
        name=entry.name, description=entry.description, tier=entry.tier, checks=list(entry.checks),
        assets=[AssetInfo(name=a.name, tier=a.tier, configurable=a.config_ref is not None) for a in entry.assets],
        params_schema=entry.params_schema(),
    )


@router.get("", response_model=JobList, summary="List launchable jobs")
async def list_jobs(catalog: CatalogDep) -> JobList:
    return JobList(jobs=[job_summary(entry) for entry in catalog])


@router.get("/{name}", response_model=JobSummary, summary="One launchable job",
            responses={404: {"model": ErrorResponse}})
async def get_job(catalog: CatalogDep, name: Annotated[str, Path(max_length=200)]) -> JobSummary:
    return job_summary(catalog.get(name))
