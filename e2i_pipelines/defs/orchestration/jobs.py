"""Jobs per workload. Each analysis job includes its upstream assets, so one run config
(the ``dataset`` config) points it at demo data or the user's own file."""

import dagster as dg

ANALYSIS_GROUPS = ("data", "features", "models", "explain", "causal", "twins")

e2i_main_job = dg.define_asset_job(
    "e2i_main_job",
    selection=dg.AssetSelection.groups(*ANALYSIS_GROUPS),
    description="Everything: data, features, model, SHAP, causal estimate + refutations, twins.",
    tags={"e2i/group": "all"},
)
feature_refresh_job = dg.define_asset_job(
    "feature_refresh_job",
    selection=dg.AssetSelection.groups("data", "features", "models"),
    description="Refresh the dataset, the Feast feature store and the outcome model.",
    tags={"e2i/group": "features"},
)
shap_job = dg.define_asset_job(
    "shap_job",
    selection=dg.AssetSelection.groups("explain").upstream(),
    description="Exact SHAP explanations of the outcome model (with its upstream data).",
    tags={"e2i/group": "explain"},
)
causal_job = dg.define_asset_job(
    "causal_job",
    selection=dg.AssetSelection.groups("causal").upstream(),
    description="Causal estimate with its diagnostic and refutation checks.",
    tags={"e2i/group": "causal"},
)
twins_job = dg.define_asset_job(
    "twins_job",
    selection=dg.AssetSelection.groups("twins").upstream(),
    description="Digital twins and simulated interventions.",
    tags={"e2i/group": "twins"},
)

analysis_jobs = [e2i_main_job, feature_refresh_job, shap_job, causal_job, twins_job]
