"""The e2i code location: every area's assets, checks, jobs, schedules, sensors and resources."""

from pathlib import Path

import dagster as dg

from e2i_pipelines.core.storage import E2IStorage, default_data_dir
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.data.assets import dataset
from e2i_pipelines.defs.diagnostics.assets import probe_assets, probe_jobs
from e2i_pipelines.defs.features.assets import feature_store
from e2i_pipelines.defs.launch.sensors import launch_sensors
from e2i_pipelines.defs.models.assets import outcome_model
from e2i_pipelines.defs.orchestration.jobs import analysis_jobs
from e2i_pipelines.defs.orchestration.schedules import schedules
from e2i_pipelines.defs.scaling.sensors import heavy_scaler_sensor

resources = {
    "storage": E2IStorage(),
    "mlflow": MlflowTracker(),
    "io_manager": dg.FilesystemIOManager(base_dir=str(Path(default_data_dir()) / "io")),
}

defs = dg.Definitions(
    assets=[dataset, feature_store, outcome_model, *probe_assets],
    asset_checks=[],
    jobs=[*analysis_jobs, *probe_jobs],
    schedules=[*schedules],
    sensors=[heavy_scaler_sensor, *launch_sensors],
    resources=resources,
)
