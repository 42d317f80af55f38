"""All routers of the API."""

from __future__ import annotations

from fastapi import APIRouter

from e2i_api.api.routes import auth, costs, datasets, health, jobs, metrics, runs

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(jobs.router)
api_router.include_router(runs.router)
api_router.include_router(datasets.router)
api_router.include_router(costs.router)
api_router.include_router(metrics.router)
api_router.include_router(auth.router)  # UI login for Caddy forward_auth
