"""Code location of the Ray storage test: the model chain (dataset, Feast features, outcome model)
as one medium-tier job and the SHAP explanations as one heavy-tier job, on the production
resources (storage and IO manager on ``E2I_STORAGE_URL``, MLflow at the node's
``MLFLOW_TRACKING_URI``: the suite's one tracking server).

A separate location from ``ray_location``, so the probe runs keep their small imports.
"""

import dagster as dg

from e2i_pipelines.core.storage import E2IStorage, StorageIOManager
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.data import assets as data_assets
from e2i_pipelines.defs.explain.assets import shap_explanations
from e2i_pipelines.defs.features import assets as feature_assets
from e2i_pipelines.defs.models import assets as model_assets

MODEL_JOB = "ray_model_job"
SHAP_JOB = "ray_shap_job"

defs = dg.Definitions(
    assets=[*data_assets.assets, *feature_assets.assets, *model_assets.assets, shap_explanations],
    jobs=[dg.define_asset_job(MODEL_JOB, selection=["dataset", "feature_store", "outcome_model"]),
          dg.define_asset_job(SHAP_JOB, selection=["shap_explanations"])],
    resources={"storage": E2IStorage(), "mlflow": MlflowTracker(),
               "io_manager": StorageIOManager()},
)
