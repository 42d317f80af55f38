"""The e2i code location: every area's assets, checks, jobs, schedules, sensors and resources."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from e2i_pipelines.core.storage import E2IStorage, default_data_dir
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.diagnostics.assets import probe_assets, probe_jobs
from e2i_pipelines.defs.scaling.sensors import heavy_scaler_sensor

resources = {
    "storage": E2IStorage(),
    "mlflow": MlflowTracker(),
    "io_manager": dg.FilesystemIOManager(base_dir=str(Path(default_data_dir()) / "io")),
}

defs = dg.Definitions(
    assets=[*probe_assets],
    asset_checks=[],
    jobs=[*probe_jobs],
    schedules=[],
    sensors=[heavy_scaler_sensor],
    resources=resources,
)
