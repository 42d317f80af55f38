"""GET /metrics: the API's Prometheus metrics (open like /health: Prometheus 2.42 cannot send
an X-API-Key header; it holds counts per route template, never run data)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from e2i_api.api.deps import DagsterDep
from e2i_api.readiness import _guard, check_webserver

router = APIRouter(tags=["health"])
DAGSTER_CHECK_TIMEOUT = 3.0


@router.get("/metrics", summary="Prometheus metrics of the API",
            response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                             "description": "Prometheus text exposition format"}})
async def metrics(request: Request, dagster: DagsterDep) -> Response:
    api_metrics = request.app.state.metrics
    started = time.perf_counter()
    check = await _guard(check_webserver(dagster), DAGSTER_CHECK_TIMEOUT)
    api_metrics.dagster_up.set(1 if check.ok else 0)
    api_metrics.dagster_check.set(time.perf_counter() - started)
    return Response(api_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
