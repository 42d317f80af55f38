"""Request dependencies: the shared Dagster client, catalog and settings held on app.state.

All ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a hop per dependency
per request that queues behind every other thread under load; these only read app.state.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from e2i_api.core.config import Settings
from e2i_api.dagster_client import DagsterClient
from e2i_api.idempotency import KeyLock
from e2i_api.run_store import FinishedResults, RunReader
from e2i_pipelines.catalog import Catalog


async def get_dagster(request: Request) -> DagsterClient:
    return request.app.state.dagster


async def get_catalog(request: Request) -> Catalog:
    return request.app.state.catalog


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_key_locks(request: Request) -> KeyLock:
    return request.app.state.key_locks


async def get_run_reader(request: Request) -> RunReader:
    """Run fields from the instance's run storage when the API has its database, else GraphQL."""
    return request.app.state.run_reader or request.app.state.dagster


async def get_finished_results(request: Request) -> FinishedResults:
    return request.app.state.finished_results


DagsterDep = Annotated[DagsterClient, Depends(get_dagster)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
KeyLocksDep = Annotated[KeyLock, Depends(get_key_locks)]
RunReaderDep = Annotated[RunReader, Depends(get_run_reader)]
FinishedResultsDep = Annotated[FinishedResults, Depends(get_finished_results)]
