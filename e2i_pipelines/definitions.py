"""The e2i code location: every area's assets, checks, jobs, schedules, sensors and resources."""

import dagster as dg

from e2i_pipelines.core.storage import E2IStorage, StorageIOManager
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.causal import assets as causal_assets
from e2i_pipelines.defs.causal import checks as causal_checks
from e2i_pipelines.defs.causal import diagnostics as causal_diagnostics
from e2i_pipelines.defs.data import assets as data_assets
from e2i_pipelines.defs.diagnostics.assets import probe_assets, probe_jobs
from e2i_pipelines.defs.explain import assets as explain_assets
from e2i_pipelines.defs.features import assets as feature_assets
from e2i_pipelines.defs.launcher.sensors import launch_sensors
from e2i_pipelines.defs.launcher.step_usage import with_step_usage
from e2i_pipelines.defs.models import assets as model_assets
from e2i_pipelines.defs.monitoring.assets import cost_assets, cost_jobs, cost_schedules
from e2i_pipelines.defs.monitoring.sensors import cost_sensors
from e2i_pipelines.defs.orchestration.executor import step_executor
from e2i_pipelines.defs.orchestration.jobs import analysis_jobs
from e2i_pipelines.defs.orchestration.schedules import schedules
from e2i_pipelines.defs.scaler.sensors import heavy_scaler_sensor
from e2i_pipelines.defs.twins import assets as twin_assets
from e2i_pipelines.defs.twins import checks as twin_checks

resources = {
    "storage": E2IStorage(),
    "mlflow": MlflowTracker(),
    "io_manager": StorageIOManager(),  # <E2I_STORAGE_URL>/io, local disk or object store
}

defs = dg.Definitions(
    assets=with_step_usage([  # every step records its peak memory and CPU time
        *data_assets.assets,
        *feature_assets.assets,
        *model_assets.assets,
        *explain_assets.assets,
        *causal_assets.assets,
        *twin_assets.assets,
        *probe_assets,
        *cost_assets,
    ]),
    asset_checks=with_step_usage([*causal_checks.asset_checks, *causal_diagnostics.asset_checks,
                                  *twin_checks.asset_checks]),
    jobs=[*analysis_jobs, *probe_jobs, *cost_jobs],
    schedules=[*schedules, *cost_schedules],
    sensors=[heavy_scaler_sensor, *launch_sensors, *cost_sensors],
    resources=resources,
    executor=step_executor,  # Dagster's default, steps forked from a preloaded forkserver
)
