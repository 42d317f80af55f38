"""Request dependencies: the shared Dagster client, catalog and settings held on app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from e2i_api.core.config import Settings
from e2i_api.dagster_client import DagsterClient
from e2i_api.idempotency import KeyLocks
from e2i_pipelines.catalog import Catalog


def get_dagster(request: Request) -> DagsterClient:
    return request.app.state.dagster


def get_catalog(request: Request) -> Catalog:
    return request.app.state.catalog


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_key_locks(request: Request) -> KeyLocks:
    return request.app.state.key_locks


DagsterDep = Annotated[DagsterClient, Depends(get_dagster)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
KeyLocksDep = Annotated[KeyLocks, Depends(get_key_locks)]
