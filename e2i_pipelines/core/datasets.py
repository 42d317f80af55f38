"""Datasets as named, owned, versioned objects under ``<storage root>/datasets/``.

Layout: ``datasets/<client>/<id>/<version>/`` holds ``data-<nonce>.parquet`` and
``manifest.json``. The id is derived from the owner and the name (the same name uploaded again
is a new version of the same dataset), the version is the SHA-256 of the uploaded bytes (the
same bytes give the same version). The manifest is written last: a version exists only once it
is complete, and a failed ingest removes what it wrote. Everything goes through the storage
root's path API (local disk or an object store).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from upath import UPath

from e2i_pipelines.core.data_root import check_folder_name
from e2i_pipelines.core.dataset_ingest import DatasetInvalid, IngestResult, ingest
from e2i_pipelines.core.errors import DataValidationError
from e2i_pipelines.core.spec import (
    CausalSpec,
    MissingReport,
    apply_missing_policy,
    check_columns,
    validate_frame,
)
from e2i_pipelines.core.storage import (
    default_data_dir,
    is_local,
    parquet_file,
    put_file,
    storage_root,
)

if TYPE_CHECKING:  # frames only in the run-side loader: the API's upload path imports no pandas
    import pandas as pd

MAX_UPLOAD_ENV = "E2I_MAX_UPLOAD_BYTES"
DEFAULT_MAX_UPLOAD = 2 << 30
MANIFEST = "manifest.json"
ID_PATTERN = r"^ds_[0-9a-f]{24}$"
VERSION_PATTERN = r"^[0-9a-f]{64}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
DATASET_TAG = "e2i/dataset"
"""Tag of a run launched on a dataset (its id): DELETE refuses while such a run is active."""


class DatasetNotFound(DataValidationError):
    """No such dataset (or version) visible to the caller."""


def max_upload_bytes() -> int:
    """``E2I_MAX_UPLOAD_BYTES`` (default 2 GiB): the largest accepted upload."""
    raw = os.environ.get(MAX_UPLOAD_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_UPLOAD
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{MAX_UPLOAD_ENV} must be a positive number of bytes")
    return int(raw)


def check_name(name: str) -> str:
    """``name`` when it is 1-128 characters of letters, digits, ``._-`` (no path parts)."""
    if not isinstance(name, str) or not re.match(NAME_PATTERN, name) or ".." in name:
        raise DatasetInvalid("name must be 1-128 letters, digits, '.', '_' or '-', starting "
                             "with a letter or digit (no '/', no '..')")
    return name


def check_id(dataset_id: str, key: str = "dataset id") -> str:
    if not isinstance(dataset_id, str) or not re.match(ID_PATTERN, dataset_id):
        raise DatasetNotFound(f"{key} must look like ds_ followed by 24 hex digits")
    return dataset_id


def dataset_id(client: str, name: str) -> str:
    """The id of ``client``'s dataset ``name`` (stable: new uploads are new versions)."""
    digest = hashlib.sha256(f"{client}\x00{name}".encode()).hexdigest()
    return f"ds_{digest[:24]}"


def datasets_root() -> UPath:
    return storage_root() / "datasets"


STAGING_ENV = "E2I_UPLOAD_STAGING_DIR"


def staging_dir() -> Path:
    """Local folder uploads are staged in before validation (never the storage root):
    ``E2I_UPLOAD_STAGING_DIR``, else ``<E2I_DATA_DIR>/.staging/uploads`` (a disk, not a tmpfs)."""
    folder = Path(os.environ.get(STAGING_ENV) or Path(default_data_dir()) / ".staging" / "uploads")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class StagedUpload:
    """An upload written chunk by chunk to a local temp file, hashed as it arrives."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.size = 0
        self._hash = hashlib.sha256()
        fd, name = tempfile.mkstemp(prefix="upload-", dir=staging_dir())
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; UploadTooLarge past the cap."""
        self.size += len(chunk)
        if self.size > self.cap:
            raise UploadTooLarge(self.cap)
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self) -> str:
        """Close the file; the SHA-256 of the bytes."""
        self._file.close()
        return self._hash.hexdigest()

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class UploadTooLarge(ValueError):
    def __init__(self, cap: int) -> None:
        super().__init__(f"the upload is larger than {cap} bytes ({MAX_UPLOAD_ENV})")


def register(staged: Path, version: str, size: int, client: str, name: str
             ) -> tuple[dict[str, Any], bool]:
    """Validate ``staged`` and store it as ``client``'s dataset ``name`` at ``version``; the
    manifest and whether it is new (the same version already stored is returned as it is)."""
    check_name(name)
    folder = datasets_root() / check_folder_name(client) / dataset_id(client, name) / version
    existing = _read_manifest(folder)
    if existing is not None:
        return existing, False
    if is_local(folder):
        folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"data-{uuid.uuid4().hex[:12]}.parquet"
    try:
        result = _write_parquet(staged, data)
        manifest = {
            "id": dataset_id(client, name), "name": name, "owner": client, "version": version,
            "created": datetime.now(UTC).isoformat(), "rows": result.rows,
            "columns": result.columns, "size_bytes": size, "format": result.format,
            "data": data.name, "parquet_bytes": data.stat().st_size,
        }
        _write_manifest(folder, manifest)
    except BaseException:
        data.unlink(missing_ok=True)
        _remove_empty(folder)
        raise
    return manifest, True


def _write_parquet(staged: Path, data: UPath) -> IngestResult:
    """Ingest ``staged`` into ``data``: directly on local disk; on an object store through a
    local Parquet file uploaded in parts (``put_file`` streams it: a buffered object-store
    writer would hold whole parts, several times over, in the API's memory)."""
    if is_local(data):
        with data.open("wb") as handle:
            return ingest(staged, handle)
    local = staged.with_name(staged.name + ".parquet")
    try:
        with local.open("wb") as handle:
            result = ingest(staged, handle)
        put_file(local, data.fs, data.path, parts_in_flight=1)  # the API holds about one part
        return result
    finally:
        local.unlink(missing_ok=True)


def _remove_empty(folder: UPath) -> None:
    """Remove ``folder`` and its dataset folder when empty (local disk; objects have none)."""
    if not is_local(folder):
        return
    for path in (folder, folder.parent):
        try:
            path.rmdir()
        except OSError:
            return


def _write_manifest(folder: UPath, manifest: dict[str, Any]) -> None:
    body = json.dumps(manifest, indent=2, sort_keys=True)
    if is_local(folder):  # readers never see a half-written manifest
        tmp = folder / f".{MANIFEST}.{uuid.uuid4().hex[:8]}"
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, folder / MANIFEST)
    else:  # an object appears whole when its upload completes
        (folder / MANIFEST).write_text(body, encoding="utf-8")


def _read_manifest(folder: UPath) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None


def _children(folder: UPath) -> list[UPath]:
    try:
        return [p for p in folder.iterdir() if not p.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _dataset_folder(dataset_id: str, client: str | None) -> UPath | None:
    """The folder of ``dataset_id`` owned by ``client`` (any client when None)."""
    check_id(dataset_id)
    root = datasets_root()
    owners = [root / check_folder_name(client)] if client is not None else _children(root)
    for owner in owners:
        folder = owner / dataset_id
        if _children(folder):
            return folder
    return None


@dataclass(frozen=True)
class Dataset:
    """A dataset's versions (manifests, newest first)."""

    versions: list[dict[str, Any]]

    @property
    def latest(self) -> dict[str, Any]:
        return self.versions[0]

    def version(self, version: str | None) -> dict[str, Any]:
        if not version:
            return self.latest
        for manifest in self.versions:
            if manifest["version"] == version:
                return manifest
        raise DatasetNotFound(f"dataset {self.latest['id']} has no version {version[:64]!r}")


def _load(folder: UPath) -> Dataset | None:
    manifests = [m for m in (_read_manifest(v) for v in _children(folder)) if m is not None]
    if not manifests:
        return None
    return Dataset(sorted(manifests, key=lambda m: m["created"], reverse=True))


def get_dataset(dataset_id: str, client: str | None) -> Dataset:
    """``dataset_id`` as ``client`` sees it (None: any owner); DatasetNotFound otherwise."""
    folder = _dataset_folder(dataset_id, client)
    found = _load(folder) if folder is not None else None
    if found is None:
        raise DatasetNotFound(f"no dataset {dataset_id!r}")
    return found


def list_datasets(client: str | None) -> list[Dataset]:
    """Datasets of ``client`` (every client's when None), newest first."""
    root = datasets_root()
    owners = [root / check_folder_name(client)] if client is not None else _children(root)
    found = [d for owner in owners for d in (_load(f) for f in _children(owner)) if d is not None]
    return sorted(found, key=lambda d: d.latest["created"], reverse=True)


def delete_dataset(dataset_id: str, client: str | None) -> None:
    """Remove every version: manifests first (unregistered), then the data."""
    folder = _dataset_folder(dataset_id, client)
    if folder is None:
        raise DatasetNotFound(f"no dataset {dataset_id!r}")
    versions = _children(folder)
    for version in versions:
        (version / MANIFEST).unlink(missing_ok=True)
    for version in versions:
        for child in _children(version):
            child.unlink(missing_ok=True)
        if is_local(version):
            for leftover in version.iterdir():
                leftover.unlink(missing_ok=True)
            version.rmdir()
    if is_local(folder):
        folder.rmdir()


def resolve(dataset_id: str, version: str | None, client: str | None) -> tuple[dict[str, Any], UPath]:
    """The manifest and Parquet object of ``dataset_id`` (``version`` or the latest) that
    ``client`` may read (None: any owner)."""
    manifest = get_dataset(dataset_id, client).version(version)
    folder = datasets_root() / manifest["owner"] / manifest["id"] / manifest["version"]
    return manifest, folder / manifest["data"]


def load_frame(manifest: dict[str, Any], data: UPath, spec: CausalSpec
               ) -> tuple[pd.DataFrame, MissingReport]:
    """The spec's columns of a stored dataset, ``missing`` applied and validated (as
    ``data.user_files.load_user_frame`` for a file); reads only those columns."""
    spec.check_roles()
    source = f"dataset {manifest['id']} (version {manifest['version'][:12]})"
    check_columns(spec, [c["name"] for c in manifest["columns"]], source)
    wanted = [*spec.required_columns, *([spec.id_column] if spec.id_column else [])]
    frame = parquet_file(data).read(columns=wanted).to_pandas()
    frame, report = apply_missing_policy(frame, spec, source=source)
    validate_frame(frame, spec, source=source)
    return frame[wanted], report
