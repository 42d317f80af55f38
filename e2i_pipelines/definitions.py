"""The e2i code location: every area's assets, checks, jobs, schedules, sensors and resources."""

from pathlib import Path

import dagster as dg

from e2i_pipelines.core.storage import E2IStorage, default_data_dir
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.causal import assets as causal_assets
from e2i_pipelines.defs.causal import checks as causal_checks
from e2i_pipelines.defs.causal import diagnostics as causal_diagnostics
from e2i_pipelines.defs.data import assets as data_assets
from e2i_pipelines.defs.diagnostics.assets import probe_assets, probe_jobs
from e2i_pipelines.defs.explain import assets as explain_assets
from e2i_pipelines.defs.features import assets as feature_assets
from e2i_pipelines.defs.launch.sensors import launch_sensors
from e2i_pipelines.defs.models import assets as model_assets
from e2i_pipelines.defs.orchestration.jobs import analysis_jobs
from e2i_pipelines.defs.orchestration.schedules import schedules
from e2i_pipelines.defs.scaling.sensors import heavy_scaler_sensor
from e2i_pipelines.defs.twins import assets as twin_assets

resources = {
    "storage": E2IStorage(),
    "mlflow": MlflowTracker(),
    "io_manager": dg.FilesystemIOManager(base_dir=str(Path(default_data_dir()) / "io")),
}

defs = dg.Definitions(
    assets=[
        *data_assets.assets,
        *feature_assets.assets,
        *model_assets.assets,
        *explain_assets.assets,
        *causal_assets.assets,
        *twin_assets.assets,
        *probe_assets,
    ],
    asset_checks=[*causal_checks.asset_checks, *causal_diagnostics.asset_checks],
    jobs=[*analysis_jobs, *probe_jobs],
    schedules=[*schedules],
    sensors=[heavy_scaler_sensor, *launch_sensors],
    resources=resources,
)
