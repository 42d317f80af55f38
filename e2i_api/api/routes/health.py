"""Liveness (no dependencies) and readiness (Dagster webserver, code location, storage, MLflow)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from e2i_api.api.deps import DagsterDep, SettingsDep
from e2i_api.core.security import authenticate
from e2i_api.models import ErrorResponse, Health, Readiness
from e2i_api.readiness import readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
async def health() -> Health:
    return Health()


@router.get("/ready", response_model=Readiness, summary="Readiness: every dependency answers",
            responses={503: {"model": Readiness, "description": "a dependency failed (see `failed`)"},
                       401: {"model": ErrorResponse},
                       429: {"model": ErrorResponse, "description": "rate limit of the key reached"}},
            dependencies=[Depends(authenticate)])
async def ready(dagster: DagsterDep,
                settings: SettingsDep) -> JSONResponse:
    result = await readiness(dagster, settings.mlflow_tracking_uri,
                             timeout=max(settings.dagster_timeout_seconds, settings.mlflow_timeout_seconds))
    return JSONResponse(result.model_dump(mode="json"), status_code=503 if result.failed else 200)
