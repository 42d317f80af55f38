"""Upload, list, read and delete datasets (CSV/Parquet), owned by the API key's client.

An upload is streamed to a local staging file (hashed as it arrives, capped by
``E2I_MAX_UPLOAD_BYTES``), validated and stored as Parquet under the storage root; see
``e2i_pipelines.core.datasets``. Another client's dataset is a 404; admin keys see all.
A JSON body imports a table or one read-only SELECT from an operator-configured Postgres
connection instead (``e2i_pipelines.core.dataset_postgres``), stored the same way.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from e2i_api.api.deps import RunReaderDep
from e2i_api.core.logging import logger
from e2i_api.core.security import Principal, require_scope
from e2i_api.dataset_models import (
    EXAMPLE_DATASET_ID,
    DatasetDetail,
    DatasetList,
    PostgresDatasetRequest,
)
from e2i_api.models import ErrorResponse, RunStatus
from e2i_pipelines.core import datasets as store
from e2i_pipelines.core.dataset_ingest import PARQUET_MAGIC, DatasetInvalid
from e2i_pipelines.core.dataset_pg_sources import SourceConfigError
from e2i_pipelines.core.dataset_postgres import SourceUnavailable, import_postgres
from e2i_pipelines.core.storage import StorageError

ERRORS = {400: {"model": ErrorResponse, "description": "the multipart body could not be decoded"},
          401: {"model": ErrorResponse, "description": "missing or invalid API key"},
          403: {"model": ErrorResponse, "description": "API key lacks the scope"},
          429: {"model": ErrorResponse, "description": "rate limit of the key reached (see Retry-After)"}}
NOT_FOUND = {404: {"model": ErrorResponse, "description": "no such dataset (or not the key's client's)"}}
RAW_TYPES = {"text/csv": "csv", "application/vnd.apache.parquet": "parquet",
             "application/octet-stream": None}
ACTIVE = (RunStatus.QUEUED, RunStatus.NOT_STARTED, RunStatus.STARTING, RunStatus.STARTED,
          RunStatus.CANCELING)
"""Statuses of a run that still reads its dataset: DELETE waits for them."""
_COPY = 1 << 20
MAX_JSON_BYTES = 256 << 10
"""Largest JSON body (a Postgres import request)."""

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=ERRORS)
read = require_scope("runs:read")
write = require_scope("runs:write")
DatasetId = Annotated[str, Path(pattern=store.ID_PATTERN, examples=[EXAMPLE_DATASET_ID])]
UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string", "format": "binary"}},
    "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "application/json": {"schema": PostgresDatasetRequest.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}, "name": {"type": "string"}}}}}}}


def _invalid(message: str, where: str = "body") -> HTTPException:
    return HTTPException(422, [{"loc": [where], "msg": message, "type": "value_error"}])


def _unavailable(what: str) -> HTTPException:
    """503 naming the problem, never a path, URL or credential (those go to the server log)."""
    logger.error("dataset storage failed", extra={"error": what})
    return HTTPException(503, f"{what}; try again later or ask the operator", headers={"Retry-After": "30"})


def _owner(principal: Principal) -> str | None:
    """The client whose datasets the key sees: its own, or every client's (None) for admin."""
    return None if principal.is_admin else principal.name


async def _stage_raw(request: Request, staged: store.StagedUpload) -> None:
    async for chunk in request.stream():
        staged.write(chunk)


def _copy_upload(upload: UploadFile, staged: store.StagedUpload) -> None:
    upload.file.seek(0)
    while chunk := upload.file.read(_COPY):
        staged.write(chunk)


async def _stage_form(request: Request, staged: store.StagedUpload) -> str | None:
    """Stage the ``file`` part of a multipart body; the ``name`` field, if any."""
    async with request.form(max_files=1, max_fields=4) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _invalid("multipart upload needs a 'file' part", "file")
        await asyncio.to_thread(_copy_upload, upload, staged)
        name = form.get("name")
        return name if isinstance(name, str) else None


def _check_declared(staged: store.StagedUpload, declared: str | None) -> None:
    with staged.path.open("rb") as handle:
        head = handle.read(len(PARQUET_MAGIC))
    if declared == "parquet" and head and head != PARQUET_MAGIC:
        raise DatasetInvalid("Content-Type says Parquet but the body is not Parquet")
    if declared == "csv" and head == PARQUET_MAGIC:
        raise DatasetInvalid("Content-Type says CSV but the body is Parquet")


async def _json_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise HTTPException(413, f"the JSON body is larger than {MAX_JSON_BYTES} bytes")
    return bytes(body)


async def _import_postgres(request: Request, principal: Principal) -> tuple[dict, bool]:
    """Import a table or SELECT from a configured Postgres connection (JSON body)."""
    try:
        body = PostgresDatasetRequest.model_validate_json(await _json_body(request))
    except ValidationError as exc:
        raise HTTPException(422, [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                                  for e in exc.errors(include_url=False, include_input=False)]) from None
    try:
        manifest, created = await asyncio.to_thread(
            import_postgres, principal.name, body.name, body.connection, table=body.table, query=body.query)
    except store.UploadTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    except DatasetInvalid as exc:
        raise _invalid(str(exc), getattr(exc, "field", "body")) from None
    except SourceConfigError as exc:
        logger.error("postgres sources misconfigured", extra={"error": str(exc)})
        raise _unavailable("the operator's Postgres connections are misconfigured") from None
    except SourceUnavailable as exc:
        raise _unavailable(str(exc)) from None
    except (OSError, StorageError):
        raise _unavailable("dataset storage is unreachable or not writable") from None
    logger.info("dataset imported from postgres", extra={
        "client": principal.name, "connection": body.connection, "dataset": manifest["id"],
        "rows": manifest["rows"], "kind": "table" if body.table else "query"})
    return manifest, created


@router.post("", response_model=DatasetDetail, status_code=201, openapi_extra=UPLOAD_BODY,
             summary="Upload a CSV or Parquet file as a dataset (a new version when the name exists), "
                     "or import one from a configured Postgres connection (JSON body)",
             responses={200: {"model": DatasetDetail, "description": "these bytes were uploaded before"},
                        413: {"model": ErrorResponse, "description": "larger than E2I_MAX_UPLOAD_BYTES"},
                        503: {"model": ErrorResponse, "description": "dataset storage unreachable or not writable, "
                                                                  "or a Postgres connection unreachable or misconfigured"},
                        415: {"model": ErrorResponse, "description": "not CSV, Parquet or multipart"}})
async def upload_dataset(
    request: Request, response: Response, principal: Annotated[Principal, Depends(write)],
    name: Annotated[str | None, Query(max_length=128, description="dataset name (letters, digits, ._-)")] = None,
) -> DatasetDetail:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        manifest, created = await _import_postgres(request, principal)
        return await _registered(manifest, created, principal, response)
    if content_type != "multipart/form-data" and content_type not in RAW_TYPES:
        raise HTTPException(415, f"Content-Type {content_type[:80] or '(none)'!r} is not accepted: use text/csv, "
                                 "application/vnd.apache.parquet, application/octet-stream, multipart/form-data "
                                 "or application/json (a Postgres import)")
    if content_type != "multipart/form-data" and not name:
        raise _invalid("a raw upload needs the query parameter 'name'", "name")
    try:
        if name:
            store.check_name(name)
    except DatasetInvalid as exc:
        raise _invalid(str(exc), "name") from None
    try:
        staged = store.StagedUpload(store.max_upload_bytes())
    except OSError:
        raise _unavailable("the upload staging folder is not writable") from None
    try:
        try:
            if content_type == "multipart/form-data":
                form_name = await _stage_form(request, staged)
                name = name or form_name
                if not name:
                    raise _invalid("give the dataset a 'name' (form field or query parameter)", "name")
            else:
                await _stage_raw(request, staged)
        except store.UploadTooLarge as exc:
            raise HTTPException(413, str(exc)) from None
        version = staged.finish()
        try:
            store.check_name(name)
            _check_declared(staged, RAW_TYPES.get(content_type))
            manifest, created = await asyncio.to_thread(
                store.register, staged.path, version, staged.size, principal.name, name)
        except DatasetInvalid as exc:
            raise _invalid(str(exc)) from None
        except (OSError, StorageError):
            raise _unavailable("dataset storage is unreachable or not writable") from None
    finally:
        staged.discard()
    return await _registered(manifest, created, principal, response)


async def _registered(manifest: dict, created: bool, principal: Principal, response: Response) -> DatasetDetail:
    """The stored dataset with its versions; Location set, 200 when the version existed."""
    dataset = await asyncio.to_thread(store.get_dataset, manifest["id"], principal.name)
    location = f"/v1/datasets/{manifest['id']}"
    response.headers["Location"] = location
    if not created:
        response.status_code = 200
    return DatasetDetail.of(manifest, dataset.versions)


@router.get("", response_model=DatasetList, summary="List datasets (the key's client's; all for admin)")
async def list_datasets(principal: Annotated[Principal, Depends(read)]) -> DatasetList:
    found = await asyncio.to_thread(store.list_datasets, _owner(principal))
    return DatasetList(datasets=[DatasetDetail.of(d.latest, d.versions) for d in found])


async def _visible(dataset_id: str, principal: Principal) -> store.Dataset:
    try:
        return await asyncio.to_thread(store.get_dataset, dataset_id, _owner(principal))
    except store.DatasetNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("/{dataset_id}", response_model=DatasetDetail, responses=NOT_FOUND,
            summary="A dataset: latest version's rows, columns, types and missing counts; all versions")
async def get_dataset(dataset_id: DatasetId, principal: Annotated[Principal, Depends(read)]) -> DatasetDetail:
    dataset = await _visible(dataset_id, principal)
    return DatasetDetail.of(dataset.latest, dataset.versions)


@router.delete("/{dataset_id}", status_code=204, summary="Delete a dataset (every version)",
               responses={**NOT_FOUND, 409: {"model": ErrorResponse,
                                             "description": "a queued or running run uses it"}})
async def delete_dataset(dataset_id: DatasetId, principal: Annotated[Principal, Depends(write)],
                         reader: RunReaderDep) -> Response:
    await _visible(dataset_id, principal)
    active = await reader.list_runs(tags={store.DATASET_TAG: dataset_id},
                                    statuses=[s.value for s in ACTIVE], limit=1)
    if active:
        raise HTTPException(409, f"dataset {dataset_id} is used by run {active[0]['runId']} "
                                 f"({active[0]['status']}); delete it when the run has finished")
    try:
        await asyncio.to_thread(store.delete_dataset, dataset_id, _owner(principal))
    except store.DatasetNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return Response(status_code=204)

