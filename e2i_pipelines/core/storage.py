"""Where runs write their files: one storage URL (``E2I_STORAGE_URL``), one folder per asset and run.

The URL is ``file:///...`` (default: ``file://`` + :func:`default_data_dir`, the quickstart) or an
object store such as ``s3://bucket/prefix`` (fsspec/s3fs through universal-pathlib; ``gs://`` and
``az://`` go through the same calls, only s3 is tested). An S3-compatible endpoint comes from
``E2I_S3_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL``; credentials from the standard AWS variables or
their ``*_FILE`` secrets (as a pair), else botocore's chain (the containers' credentials file).

Atomicity: on local disk an output is written into a hidden temporary folder and renamed into
place when complete. On an object store it is staged in a local folder, uploaded under its final
key (large files as S3 multipart uploads while they are written, completed only at commit; files
published whole, such as the twins' Parquet parts, as single objects at once; see
:mod:`e2i_pipelines.core.upload_stream`), and committed by a manifest object (``_E2I_COMPLETE``)
written last; readers
(:func:`exists`, :func:`is_committed`) treat an output without its manifest as absent, and a
failed upload removes what it wrote. So a failed or OOM-killed run never leaves a readable
half-written result behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
from upath import UPath

from e2i_pipelines.core.secrets import read_secret
from e2i_pipelines.core.upload_stream import (
    StagingStreamer,
    put_file,
    streams_to,
)

STORAGE_URL_ENV = "E2I_STORAGE_URL"
ENDPOINT_ENVS = ("E2I_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")
MANIFEST = "_E2I_COMPLETE"
LOCAL_PROTOCOLS = ("", "file", "local")


class StorageError(RuntimeError):
    """The storage URL is malformed, unreachable or refuses access (message has no credentials)."""


def default_data_dir() -> str:
    """E2I_DATA_DIR, else $DAGSTER_HOME/e2i_data, else ./.e2i_home/e2i_data."""
    if os.environ.get("E2I_DATA_DIR"):
        return os.environ["E2I_DATA_DIR"]
    home = os.environ.get("DAGSTER_HOME") or str(Path.cwd() / ".e2i_home")
    return str(Path(home) / "e2i_data")


def storage_url() -> str:
    """``E2I_STORAGE_URL``, else ``file://`` + the absolute :func:`default_data_dir`."""
    url = (os.environ.get(STORAGE_URL_ENV) or "").strip()
    if url:
        return url.rstrip("/") if "://" in url and urlsplit(url).path not in ("", "/") else url
    return "file://" + str(Path(default_data_dir()).expanduser().absolute())


def protocol_of(url: str | os.PathLike[str]) -> str:
    """The URL scheme (``s3``, ``gs``, ...), ``""`` for a plain local path."""
    text = os.fspath(url)
    return urlsplit(text).scheme.lower() if "://" in text else ""


def is_local(path: str | os.PathLike[str]) -> bool:
    """True for a plain path or a ``file://`` URL."""
    if isinstance(path, UPath) and not isinstance(path, Path):
        return path.protocol in LOCAL_PROTOCOLS
    return protocol_of(path) in LOCAL_PROTOCOLS


def safe_url(url: str | os.PathLike[str]) -> str:
    """``url`` without user info or query (never credentials), for messages."""
    text = os.fspath(url)
    if "://" not in text:
        return text
    parts = urlsplit(text)
    return urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))


def storage_options(protocol: str | None = None) -> dict[str, Any]:
    """fsspec options for ``protocol`` (default: the storage URL's): for s3 the endpoint,
    credentials and region from the environment, connect timeouts so a dead endpoint fails fast."""
    proto = protocol_of(storage_url()) if protocol is None else protocol
    if proto not in ("s3", "s3a"):
        return {}
    options: dict[str, Any] = {
        "config_kwargs": {"connect_timeout": 5, "retries": {"max_attempts": 3, "mode": "standard"}},
    }
    endpoint = next((os.environ[name] for name in ENDPOINT_ENVS if os.environ.get(name)), None)
    if endpoint:
        options["endpoint_url"] = endpoint
        if endpoint.lower().startswith("http://"):
            # Over plain http SigV4 signs every body's SHA-256, which the server checks, so
            # botocore's extra CRC32 of each body checks nothing more (https keeps it: there
            # the body is not signed).
            options["config_kwargs"]["request_checksum_calculation"] = "when_required"
    # Explicit only as a pair: where the entrypoint moved the key into a credentials file
    # (AWS_SHARED_CREDENTIALS_FILE, core/secrets.py) botocore's own chain reads it.
    credentials = {option: read_secret(name) for option, name in (
        ("key", "AWS_ACCESS_KEY_ID"), ("secret", "AWS_SECRET_ACCESS_KEY"), ("token", "AWS_SESSION_TOKEN"))}
    if credentials["key"] and credentials["secret"]:
        options.update({option: value for option, value in credentials.items() if value})
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["client_kwargs"] = {"region_name": region}
    return options


def to_path(path: str | os.PathLike[str]) -> UPath:
    """A path object for a local path or a storage URL (object-store options from the env).

    Local paths (and ``file://`` URLs) come back as plain ``pathlib.Path`` subclasses.
    """
    if isinstance(path, UPath) and not is_local(path):
        return path
    text = os.fspath(path)
    proto = protocol_of(text)
    if proto in LOCAL_PROTOCOLS:
        return UPath(urlsplit(text).path if proto else text)
    if proto not in ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"):
        raise StorageError(f"storage URL {safe_url(text)!r}: unsupported scheme {proto!r} "
                           "(use file://, s3://, gs:// or az://)")
    parts = urlsplit(text)
    if not parts.netloc:
        raise StorageError(f"storage URL {safe_url(text)!r} names no bucket")
    if "@" in parts.netloc or parts.query:
        raise StorageError(f"storage URL {safe_url(text)!r}: credentials and query strings do not "
                           "belong in the URL (use the AWS_* variables or their *_FILE secrets)")
    return UPath(text, **storage_options(proto))


def storage_root() -> UPath:
    """The storage URL as a path object (a ``pathlib.Path`` for local storage)."""
    return to_path(storage_url())


def check_storage(url: str | None = None) -> UPath:
    """The storage root after one cheap round trip; StorageError naming the URL (no credentials)
    when the bucket is unreachable, missing or refuses access. Local roots are created."""
    root = to_path(url or storage_url())
    if is_local(root):
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"storage {safe_url(root)!r} is not writable ({exc.strerror})") from None
        return root
    shown = safe_url(url or storage_url())
    try:
        bucket = urlsplit(str(root)).netloc
        root.fs.invalidate_cache()
        if hasattr(root.fs, "call_s3"):  # s3fs: one HEAD; other stores: a listing
            root.fs.call_s3("head_bucket", Bucket=bucket)
        else:
            root.fs.ls(bucket, detail=False)
    except FileNotFoundError:
        raise StorageError(f"storage {shown!r}: bucket {bucket!r} does not exist") from None
    except PermissionError:
        raise StorageError(f"storage {shown!r}: access denied (check the credentials)") from None
    except Exception as exc:  # noqa: BLE001 - botocore/aiohttp errors; only the type is shown
        raise StorageError(f"storage {shown!r} is unreachable or misconfigured "
                           f"({type(exc).__name__})") from None
    return root


def is_committed(output: str | os.PathLike[str]) -> bool:
    """True when the output folder is complete: it exists locally, or has its manifest remotely."""
    path = to_path(output)
    if is_local(path):
        return path.exists() and not path.name.startswith(".tmp-")
    return (path / MANIFEST).exists()


def _committed_ancestor(path: UPath) -> bool:
    root = storage_root()
    for parent in [path, *path.parents]:
        if (parent / MANIFEST).exists():
            return True
        if str(parent).rstrip("/") in (str(root).rstrip("/"), "") or parent == parent.parent:
            return False
    return False


def exists(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` exists and (on an object store) belongs to a committed output."""
    target = to_path(path)
    try:
        if is_local(target):
            return target.exists()
        return target.exists() and _committed_ancestor(target)
    except (OSError, ValueError):
        return False


def list_dir(path: str | os.PathLike[str]) -> list[str]:
    """Names directly under ``path`` (the manifest is not listed)."""
    return sorted(p.name for p in to_path(path).iterdir() if p.name != MANIFEST)


def open_file(path: str | os.PathLike[str], mode: str = "rb", **kwargs: Any):
    """Open a local file or an object for reading/writing (streams; nothing is loaded whole)."""
    return to_path(path).open(mode, **kwargs)


def read_text(path: str | os.PathLike[str]) -> str:
    """The text content of a local file or an object (UTF-8)."""
    return to_path(path).read_text(encoding="utf-8")


@contextmanager
def local_copy(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A local file with the content of ``path`` (itself when local; a temp download otherwise),
    for libraries that need a filename (LightGBM, Feast)."""
    source = to_path(path)
    if is_local(source):
        yield Path(source)
        return
    folder = Path(tempfile.mkdtemp(prefix="e2i-copy-", dir=_staging_dir()))
    try:
        target = folder / source.name
        if source.is_dir():  # a committed output folder: its files, not the manifest
            base = source.path.rstrip("/")
            for name in source.fs.find(base):
                rel = name[len(base) + 1:]
                if rel and rel != MANIFEST:
                    (target / rel).parent.mkdir(parents=True, exist_ok=True)
                    source.fs.get_file(name, str(target / rel))
        else:
            source.fs.get_file(source.path, str(target))
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def parquet_file(path: str | os.PathLike[str]):
    """A ``pyarrow.parquet.ParquetFile`` reading only the row groups/columns asked for."""
    import pyarrow.parquet as pq

    source = to_path(path)
    if is_local(source):
        # No pre-buffering on a local disk: it holds every column chunk's file bytes until the
        # ParquetFile goes away (a 1M x 32 float read: Arrow's pool peaked at 460 MiB instead
        # of 262 MiB, at the same speed). Remote reads keep it: it coalesces ranged requests.
        return pq.ParquetFile(os.fspath(source), pre_buffer=False)
    # Uncached ranged reads: Parquet asks for whole column chunks, and s3fs's default read-ahead
    # cache (50 MiB blocks) kept ~100 MiB more than local disk while a 1M-row file was streamed.
    return pq.ParquetFile(source.fs.open(source.path, "rb", cache_type="none"))


def parquet_files(path: str | os.PathLike[str]) -> list:
    """``[parquet_file(path)]`` for a file; for a Parquet dataset folder (the twins) its part
    files (``*.parquet``, in name order; hidden and ``_`` names skipped)."""
    source = to_path(path)
    if not source.is_dir():
        return [parquet_file(source)]
    parts = sorted((p for p in source.iterdir() if p.name.endswith(".parquet")
                    and not p.name.startswith((".", "_"))), key=lambda p: p.name)
    if not parts:
        raise FileNotFoundError(f"{safe_url(str(path))} holds no Parquet files")
    return [parquet_file(part) for part in parts]


def read_parquet(path: str | os.PathLike[str], columns: list[str] | None = None):
    """A DataFrame of ``columns`` (all when None) of a Parquet file, object or dataset folder."""
    return read_parquet_files(parquet_files(path), columns)


def read_parquet_files(files: list, columns: list[str] | None = None):
    """One DataFrame of ``columns`` of already opened Parquet files (:func:`parquet_files`)."""
    if len(files) == 1:
        return files[0].read(columns=columns).to_pandas()
    import pyarrow as pa

    return pa.concat_tables([f.read(columns=columns) for f in files]).to_pandas()


def _staging_dir() -> Path:
    folder = Path(default_data_dir()) / ".staging"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _upload(staged: Path, final: UPath, streamed: set[str] | None = None) -> None:
    """Upload every file of ``staged`` under ``final`` (but the ``streamed`` ones, already
    there), then the manifest last."""
    fs = final.fs
    base = final.path.rstrip("/")
    files = {f.relative_to(staged).as_posix(): f.stat().st_size
             for f in sorted(staged.rglob("*")) if f.is_file()}
    for rel in files:
        if rel not in (streamed or ()):
            put_file(staged / rel, fs, f"{base}/{rel}")
    with fs.open(f"{base}/{MANIFEST}", "wb") as handle:
        handle.write(json.dumps({"files": files}, sort_keys=True).encode())


def _remove(final: UPath) -> None:
    fs = final.fs
    base = final.path.rstrip("/")
    try:
        if fs.exists(f"{base}/{MANIFEST}"):
            fs.rm_file(f"{base}/{MANIFEST}")
        if fs.exists(base):
            fs.rm(base, recursive=True)
    except FileNotFoundError:
        pass
    fs.invalidate_cache()


_CHECKED: set[str] = set()


def check_storage_once(url: str) -> None:
    """:func:`check_storage` for object stores, once per URL and process (local: nothing)."""
    if not is_local(url) and url not in _CHECKED:
        check_storage(url)
        _CHECKED.add(url)


class StorageIOManager(dg.ConfigurableIOManagerFactory):
    """Dagster's UPath-based pickle IO manager on ``<storage URL>/io`` (resolved at run time),
    after a check that the storage is reachable."""

    base_dir: str = ""

    def create_io_manager(self, context: dg.InitResourceContext) -> dg.UPathIOManager:
        from dagster._core.storage.fs_io_manager import PickledObjectFilesystemIOManager

        base = self.base_dir or f"{storage_url().rstrip('/')}/io"
        check_storage_once(storage_url() if not self.base_dir else base)
        if is_local(base):
            return PickledObjectFilesystemIOManager(base_dir=os.fspath(to_path(base)))
        return PickledObjectFilesystemIOManager(base_dir=base, **storage_options(protocol_of(base)))


class E2IStorage(dg.ConfigurableResource):
    """Root (a path or storage URL; default :func:`storage_url`) for every file a run writes."""

    root: str = ""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Fail at run start, naming the URL (no credentials), when the store is unreachable."""
        check_storage_once(self.root or storage_url())

    @property
    def root_path(self) -> UPath:
        return to_path(self.root) if self.root else storage_root()

    def output_dir(self, context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
                   name: str | None = None) -> UPath:
        """Final folder for this asset's output in this run (not created)."""
        key = name or context.asset_key.to_user_string().replace("/", "__")
        return self.root_path / key / context.run.run_id

    @contextmanager
    def atomic_output(self, final: str | os.PathLike[str]) -> Iterator[Path]:
        """Yield a local temp folder; on success it becomes ``final`` (renamed locally, uploaded
        then committed by a manifest remotely), on error it is removed and ``final`` is absent."""
        target = to_path(final)
        if is_local(target):
            with _local_atomic(Path(target)) as tmp:
                yield tmp
            return
        # An earlier attempt's output under this key goes first: published files (whole
        # objects) land under the final key while the asset still writes.
        _remove(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=_staging_dir()))
        # Large files (Parquet row groups) go up while they are written; completed at commit.
        streamer = StagingStreamer(tmp, target.fs, target.path) if streams_to(target.fs) else None
        try:
            with streamer or nullcontext():
                yield tmp
            try:
                _upload(tmp, target, streamer.finish() if streamer else None)
            except BaseException:
                _remove(target)
                raise
        finally:
            if streamer is not None:
                streamer.abort()  # after a failure: no multipart upload is completed
            shutil.rmtree(tmp, ignore_errors=True)

    def local_mirror(self, final: str | os.PathLike[str]) -> Path:
        """``final`` itself on local disk; on an object store a node-local copy of the committed
        output under ``<E2I_DATA_DIR>/mirror/`` (for tools that need a folder, e.g. Feast)."""
        source = to_path(final)
        if is_local(source):
            return Path(source)
        target = Path(default_data_dir()) / "mirror" / source.parent.name / source.name
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        with local_copy(source) as copy:
            shutil.move(str(copy), target)
        return target


@contextmanager
def _local_atomic(final: Path) -> Iterator[Path]:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
