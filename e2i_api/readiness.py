"""Dependency checks behind GET /ready: Dagster webserver, code location, run storage, MLflow.

A check's ``detail`` says whether the dependency is up or down, never its address or error
text (those go to the API log)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from e2i_api.core.logging import logger
from e2i_api.dagster_client import DagsterClient, DagsterError
from e2i_api.models import DependencyCheck, Readiness

_DB_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mssql": 1433}


async def _guard(check: Awaitable[DependencyCheck], timeout: float) -> DependencyCheck:
    try:
        return await asyncio.wait_for(check, timeout)
    except TimeoutError:
        return DependencyCheck(ok=False, detail=f"down: no answer within {timeout}s")
    except DagsterError as exc:
        logger.warning("readiness check failed", extra={"error": str(exc)})
        return DependencyCheck(ok=False, detail="down")


def _down(what: str, error: object) -> DependencyCheck:
    """A failed check: the error text is logged, the answer only says ``down``."""
    logger.warning("readiness check failed", extra={"dependency": what, "error": str(error)})
    return DependencyCheck(ok=False, detail="down")


async def check_webserver(client: DagsterClient) -> DependencyCheck:
    info = await client.server_info()
    return DependencyCheck(ok=True, detail=f"up (dagster webserver {info.get('dagster_webserver_version', '?')})")


async def check_storage(client: DagsterClient) -> DependencyCheck:
    """A runs query reads the instance's run storage through the webserver."""
    await client.list_runs(limit=1)
    return DependencyCheck(ok=True, detail="up (run storage answered a runs query)")


async def check_location(client: DagsterClient) -> DependencyCheck:
    status, error = await client.location_status()
    if status != "LOADED" or error:
        return _down(f"code location {client.location!r} {status}", error or "")
    return DependencyCheck(ok=True, detail="up (code location loaded)")


def _local_store(path: Path) -> DependencyCheck:
    target = path if path.exists() else path.parent
    if not target.is_dir():
        return _down("mlflow", f"MLflow store {path} does not exist")
    if not os.access(target, os.W_OK):
        return _down("mlflow", f"MLflow store {target} is not writable")
    return DependencyCheck(ok=True, detail="up (local store usable)")


async def check_mlflow(uri: str, timeout: float) -> DependencyCheck:
    """HTTP ``/health`` for an http(s) tracking server; the store path or DB port otherwise."""
    if not uri:
        return DependencyCheck(ok=True, detail="MLFLOW_TRACKING_URI not set: check skipped")
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]
    if scheme in ("http", "https"):
        try:
            async with httpx.AsyncClient(timeout=timeout) as http:
                response = await http.get(f"{uri.rstrip('/')}/health")
        except httpx.HTTPError as exc:
            return _down("mlflow", f"MLflow at {uri} unreachable ({type(exc).__name__})")
        if not response.is_success:
            return _down("mlflow", f"MLflow /health answered HTTP {response.status_code}")
        return DependencyCheck(ok=True, detail="up")
    if scheme in ("", "file"):
        return _local_store(Path(unquote(parsed.path)))
    if scheme == "sqlite":
        db = Path(unquote(parsed.path)[1:] if parsed.path.startswith("//") else unquote(parsed.path))
        return _local_store(db)
    if scheme in _DB_PORTS and parsed.hostname:
        try:
            _, writer = await asyncio.open_connection(parsed.hostname, parsed.port or _DB_PORTS[scheme])
        except OSError as exc:
            return _down("mlflow", f"MLflow database {parsed.hostname} unreachable ({exc})")
        writer.close()
        return DependencyCheck(ok=True, detail="up (database accepts connections)")
    return DependencyCheck(ok=True, detail=f"MLflow URI scheme {scheme!r} is not checked")


async def readiness(client: DagsterClient, mlflow_uri: str, timeout: float) -> Readiness:
    """All checks concurrently; ``failed`` names each dependency that is not ok."""
    names = ["dagster_webserver", "dagster_code_location", "dagster_storage", "mlflow"]
    results = await asyncio.gather(
        _guard(check_webserver(client), timeout), _guard(check_location(client), timeout),
        _guard(check_storage(client), timeout), _guard(check_mlflow(mlflow_uri, timeout), timeout),
    )
    checks = dict(zip(names, results, strict=True))
    failed = [name for name, check in checks.items() if not check.ok]
    return Readiness(status="unavailable" if failed else "ready", failed=failed, checks=checks)
