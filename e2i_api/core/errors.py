"""Exception -> HTTP response mapping: clear JSON errors with the request id, never a traceback."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from e2i_api.core.logging import logger, request_id_var
from e2i_api.dagster_client import (
    DagsterQueryError,
    DagsterUnavailableError,
    LaunchRejected,
    RunNotFound,
)
from e2i_api.idempotency import (
    IDEMPOTENCY_HEADER,
    IdempotencyKeyReused,
    IdempotencyStoreUnavailable,
    KeyStillLaunching,
)
from e2i_pipelines.catalog import ParamsValidationError, UnknownJobError


def error_response(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "request_id": request_id_var.get()}, status, headers=headers)


STORAGE_DOWN_MARKERS = (
    "OperationalError", "could not connect to server", "connection refused",
    "server closed the connection", "the database system is", "terminating connection",
    "connection to server at",
)
"""Texts of a Dagster error that mean its storage (Postgres) is down or restarting, not a bug."""


def storage_unavailable(message: str) -> bool:
    """True when a GraphQL error says Dagster cannot reach its storage (then 503, not 502)."""
    lowered = message.lower()
    return any(marker.lower() in lowered for marker in STORAGE_DOWN_MARKERS)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods)


def _validation(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # Starlette lists only the first matching route's methods
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return error_response(exc.status_code, exc.detail, headers)

    @app.exception_handler(DagsterUnavailableError)
    async def unavailable(_: Request, exc: DagsterUnavailableError) -> JSONResponse:
        logger.warning("dagster unavailable", extra={"error": str(exc)})
        return error_response(503, "Dagster is unavailable", {"Retry-After": "5"})

    @app.exception_handler(DagsterQueryError)
    async def bad_gateway(_: Request, exc: DagsterQueryError) -> JSONResponse:
        if storage_unavailable(str(exc)):
            logger.warning("dagster storage unavailable", extra={"error": str(exc)})
            return error_response(503, "Dagster's storage is unavailable", {"Retry-After": "5"})
        logger.error("dagster query failed", extra={"error": str(exc)})
        return error_response(502, "Dagster returned an error; see the API log for this request id")

    @app.exception_handler(RunNotFound)
    async def run_not_found(_: Request, exc: RunNotFound) -> JSONResponse:
        return error_response(404, str(exc))

    @app.exception_handler(UnknownJobError)
    async def unknown_job(_: Request, exc: UnknownJobError) -> JSONResponse:
        return error_response(404, str(exc))

    @app.exception_handler(ParamsValidationError)
    async def bad_params(_: Request, exc: ParamsValidationError) -> JSONResponse:
        return error_response(422, [_validation(["body", "params", *e["loc"]], e["msg"], e["type"])
                                    for e in exc.errors])

    @app.exception_handler(LaunchRejected)
    async def rejected(_: Request, exc: LaunchRejected) -> JSONResponse:
        return error_response(422, [_validation(["body", "params"], f"Dagster rejected the run: {exc}",
                                                "dagster_rejected")])

    @app.exception_handler(IdempotencyKeyReused)
    async def key_reused(_: Request, exc: IdempotencyKeyReused) -> JSONResponse:
        return error_response(422, [_validation(["header", IDEMPOTENCY_HEADER], str(exc), "idempotency_key_reused")])

    @app.exception_handler(KeyStillLaunching)
    async def key_busy(_: Request, exc: KeyStillLaunching) -> JSONResponse:
        return error_response(409, str(exc), {"Retry-After": "5"})

    @app.exception_handler(IdempotencyStoreUnavailable)
    async def key_store_down(_: Request, exc: IdempotencyStoreUnavailable) -> JSONResponse:
        logger.warning("idempotency database unavailable", extra={"error": str(exc)})
        return error_response(503, "the idempotency database is unavailable", {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal error; see the API log for this request id")
