"""The ``outcome_model`` asset: LightGBM trained on features retrieved through Feast, in MLflow."""

import dagster as dg
import lightgbm as lgb
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from e2i_pipelines.core.budget import n_jobs
from e2i_pipelines.core.encoding import categorical_columns
from e2i_pipelines.core.plots import figure_png, png_metadata
from e2i_pipelines.core.refs import DatasetRef, FeatureStoreRef, ModelRef
from e2i_pipelines.core.storage import E2IStorage, local_copy
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.features.feature_repo import TIMESTAMP, node_store
from e2i_pipelines.defs.models.config import OutcomeModelConfig
from e2i_pipelines.tiers import Tier, asset_tier_kwargs


def retrieve_training_frame(
    dataset: DatasetRef, features: FeatureStoreRef, storage: E2IStorage, rows: int, seed: int
) -> pd.DataFrame:
    """Labels from the dataset joined to covariates by Feast point-in-time retrieval."""
    spec = dataset.spec
    labels = dataset.read([dataset.id_column, spec.treatment, spec.outcome])
    if len(labels) > rows:
        labels = labels.sample(rows, random_state=seed)
    labels[TIMESTAMP] = pd.Timestamp.now(tz="UTC")
    store = node_store(features, storage)
    refs = [f"{features.feature_view}:{f}" for f in features.feature_names]
    frame = store.get_historical_features(entity_df=labels, features=refs).to_df()
    incomplete = int(frame[features.feature_names].isna().any(axis=1).sum())
    if len(frame) != len(labels) or incomplete:
        raise dg.Failure(f"Feast returned {len(frame)} rows for {len(labels)} entities, "
                         f"{incomplete} without features")
    return frame


def model_inputs(frame: pd.DataFrame, treatment: str, covariates: list[str],
                 declared: list[str] | tuple[str, ...] = ()):
    """Model input frame (treatment first) and the category levels of categorical columns
    (declared in the spec or not numeric), which LightGBM then splits on as categories."""
    inputs = frame[[treatment, *covariates]].copy()
    categories: dict[str, list[str]] = {}
    for col in categorical_columns(inputs, covariates, declared):
        levels = sorted(inputs[col].astype(str).unique())
        categories[col] = levels
        inputs[col] = pd.Categorical(inputs[col].astype(str), categories=levels)
    return inputs, categories


def _importance_plot(booster: lgb.Booster) -> plt.Figure:
    gain = pd.Series(booster.feature_importance("gain"), index=booster.feature_name())
    gain = gain.sort_values().tail(15)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.barh(gain.index, gain.values, color="#4C72B0")
    ax.set_xlabel("total gain")
    ax.set_title("Outcome model: feature importance")
    return fig


@dg.asset(
    group_name="models",
    description="LightGBM outcome model (outcome ~ treatment + covariates) logged to MLflow.",
    **asset_tier_kwargs(Tier.MEDIUM),
)
def outcome_model(
    context: dg.AssetExecutionContext,
    config: OutcomeModelConfig,
    dataset: DatasetRef,
    feature_store: FeatureStoreRef,
    storage: E2IStorage,
    mlflow: MlflowTracker,
) -> dg.Output[ModelRef]:
    import mlflow as mlf

    config.check()
    spec = dataset.spec
    frame = retrieve_training_frame(dataset, feature_store, storage, config.train_rows,
                                   config.seed)
    context.log.info(f"retrieved {len(frame):,} training rows through Feast")
    inputs, categories = model_inputs(frame, spec.treatment, feature_store.feature_names,
                                      spec.categorical)
    target = frame[spec.outcome].to_numpy(dtype=np.float64)
    rng = np.random.default_rng(config.seed)
    holdout = rng.random(len(frame)) < config.holdout_share
    params = {
        "objective": "regression", "num_leaves": config.num_leaves,
        "learning_rate": config.learning_rate, "num_threads": n_jobs(), "seed": config.seed,
        "verbose": -1,
    }
    train = lgb.Dataset(inputs[~holdout], target[~holdout])
    booster = lgb.train(params, train, num_boost_round=config.n_estimators)
    pred = booster.predict(inputs[holdout])
    resid = target[holdout] - pred
    rmse = float(np.sqrt(np.mean(resid**2)))
    r2 = float(1 - resid.var() / target[holdout].var())

    final = storage.output_dir(context)
    with storage.atomic_output(final) as tmp:
        booster.save_model(str(tmp / "model.txt"))
        png = figure_png(_importance_plot(booster), tmp / "feature_importance.png")
    with mlflow.start_run(context, "outcome_model") as run:
        mlf.log_params({**params, "n_estimators": config.n_estimators, "train_rows": len(frame),
                        "treatment": spec.treatment, "outcome": spec.outcome})
        mlf.log_metrics({"holdout_rmse": rmse, "holdout_r2": r2})
        with local_copy(final / "feature_importance.png") as local:
            mlf.log_artifact(str(local))
        mlf.lightgbm.log_model(booster, name="model")
        run_id = run.info.run_id
    ref = ModelRef(
        model_path=str(final / "model.txt"), feature_names=list(inputs.columns),
        treatment=spec.treatment, target=spec.outcome, categories=categories,
        mlflow_run_id=run_id,
    )
    context.log.info(f"outcome model: holdout RMSE {rmse:.3f}, R^2 {r2:.3f}; MLflow run {run_id}")
    return dg.Output(ref, metadata={
        "holdout_rmse": rmse, "holdout_r2": r2, "train_rows": int((~holdout).sum()),
        "n_estimators": config.n_estimators, "mlflow_run_id": run_id,
        "mlflow_tracking_uri": mlflow.uri, "model_path": dg.MetadataValue.path(ref.model_path),
        "feature_importance": png_metadata(png, "feature importance"),
    })


assets = [outcome_model]
