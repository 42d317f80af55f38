"""Compute logs where the storage URL points: Dagster's S3 manager for ``s3://``, else local.

One instance config serves both (``compute_logs`` in dagster.yaml): with ``E2I_STORAGE_URL``
``s3://bucket/prefix`` the logs go to ``s3://bucket/prefix/compute_logs/`` through
``dagster_aws.s3.S3ComputeLogManager`` (endpoint and credentials as for the storage layer);
otherwise to ``base_dir`` (default ``<E2I_DATA_DIR>/.dagster/compute_logs``).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
from dagster._core.storage.compute_log_manager import ComputeLogManager
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from e2i_pipelines.core.storage import default_data_dir, protocol_of, storage_options, storage_url


class StorageComputeLogManager(ComputeLogManager, ConfigurableClass):
    """Factory: ``from_config_value`` returns the S3 or the local compute log manager (this
    abstract class itself is never instantiated)."""

    @classmethod
    def config_type(cls) -> dict:
        return {"base_dir": dg.Field(dg.StringSource, is_required=False),
                "upload_interval": dg.Field(int, is_required=False, default_value=30)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: dict):
        url = storage_url()
        if protocol_of(url) in ("s3", "s3a"):
            from dagster_aws.s3 import S3ComputeLogManager

            parts, options = urlsplit(url), storage_options("s3")
            prefix = "/".join(p for p in (parts.path.strip("/"), "compute_logs") if p)
            return S3ComputeLogManager(
                bucket=parts.netloc, prefix=prefix, inst_data=inst_data,
                endpoint_url=options.get("endpoint_url"),
                region=options.get("client_kwargs", {}).get("region_name"),
                local_dir=str(Path(default_data_dir()) / ".dagster" / "compute_logs_staging"),
                upload_interval=config_value.get("upload_interval"), skip_empty_files=True)
        from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager

        base = config_value.get("base_dir") or str(Path(default_data_dir()) / ".dagster"
                                                   / "compute_logs")
        return LocalComputeLogManager(base_dir=base, inst_data=inst_data)
