"""SHAP assets: exact per-row attributions of the whole population, and a sampled summary."""

from contextlib import nullcontext
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from e2i_pipelines.analytics.explain.background import sample_background, sample_rows
from e2i_pipelines.analytics.explain.plots import beeswarm_figure, importance_bar_figure
from e2i_pipelines.analytics.explain.stream import explain_parquet, parquet_rows
from e2i_pipelines.analytics.explain.treeshap import (
    TreeShapExplainer,
    additivity_error,
    model_matrix,
)
from e2i_pipelines.core.budget import n_jobs
from e2i_pipelines.core.fanout import fanout_metadata, open_fanout
from e2i_pipelines.core.plots import figure_png, png_metadata
from e2i_pipelines.core.progress import Progress
from e2i_pipelines.core.refs import DatasetRef, ModelRef
from e2i_pipelines.core.storage import E2IStorage, local_copy, parquet_file
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.explain.config import ShapConfig, ShapSummaryConfig
from e2i_pipelines.tiers import Tier, asset_tier_kwargs

ADDITIVITY_TOLERANCE = 1e-6


def _check_columns(dataset: DatasetRef, model: ModelRef) -> None:
    """Fail before heavy work when the data lacks a model input or the id column."""
    names = parquet_file(dataset.path).schema_arrow.names
    missing = [c for c in [dataset.id_column, *model.feature_names] if c not in names]
    if missing:
        raise dg.Failure(f"dataset {dataset.path} has no column(s) {missing} needed for SHAP; "
                         f"available: {names}")


def _background(dataset: DatasetRef, model: ModelRef, config: ShapConfig) -> pd.DataFrame | None:
    """The seeded background sample of an interventional run (None: path-dependent);
    too many rows for the chosen source fail here, before any SHAP work."""
    if config.feature_perturbation != "interventional":
        return None
    try:
        frame = sample_background(dataset.path, list(model.feature_names),
                                  config.background_rows, config.seed,
                                  config.background_source, model.treatment)
    except ValueError as exc:
        raise dg.Failure(f"shap config invalid: {exc}") from exc
    return model.model_frame(frame)


def _explainer(context: dg.AssetExecutionContext, model: ModelRef, method: str,
               feature_perturbation: str = "tree_path_dependent",
               background: pd.DataFrame | None = None) -> TreeShapExplainer:
    explainer = TreeShapExplainer(model.load_booster(), method, n_threads=n_jobs(),
                                  feature_perturbation=feature_perturbation,
                                  background=background)
    if explainer.fallback_reason:
        context.log.warning(f"fast TreeSHAP cannot handle this model ({explainer.fallback_reason}); "
                            "falling back to LightGBM pred_contrib (exact, slower)")
    elif explainer.flat is not None:
        context.log.info(
            f"fast TreeSHAP: {explainer.flat.n_trees} trees, {explainer.flat.n_leaves} leaves, "
            f"{explainer.table_leaves} tabulated (depth <= {explainer.table_depth}, "
            f"{explainer.table_mb:.0f} MiB), {n_jobs()} threads, {feature_perturbation}"
            + (f" over {len(background):,} background rows" if background is not None else ""))
    return explainer


def _top_features(importance: pd.DataFrame, k: int) -> list[dict]:
    return [{"feature": str(r.feature), "mean_abs_shap": float(r.mean_abs_shap)}
            for r in importance.head(k).itertuples()]


def _figures(folder: Path, importance: pd.DataFrame, sample_shap: np.ndarray,
             sample_features: np.ndarray, names: list[str], top_k: int) -> dict[str, bytes]:
    """Write importance.csv, beeswarm.png and bar.png into ``folder``; return the PNGs."""
    importance.to_csv(folder / "importance.csv", index=False)
    return {
        "beeswarm": figure_png(beeswarm_figure(sample_shap, sample_features, names, top_k),
                               folder / "shap_beeswarm.png"),
        "bar": figure_png(importance_bar_figure(importance, top_k), folder / "shap_bar.png"),
    }


def _log_mlflow(context, mlflow: MlflowTracker, run_name: str, folder: Path,
                params: dict, metrics: dict) -> str:
    import mlflow as mlf

    with mlflow.start_run(context, run_name) as run:
        mlf.log_params(params)
        mlf.log_metrics(metrics)
        for name in ("importance.csv", "shap_beeswarm.png", "shap_bar.png"):
            with local_copy(folder / name) as local:
                mlf.log_artifact(str(local))
        return run.info.run_id


@dg.asset(
    group_name="explain",
    description="Exact TreeSHAP attributions of the outcome model for every row (chunked, "
                "bounded memory), global importance, beeswarm and bar plots.",
    **asset_tier_kwargs(Tier.HEAVY),
)
def shap_explanations(
    context: dg.AssetExecutionContext,
    config: ShapConfig,
    dataset: DatasetRef,
    outcome_model: ModelRef,
    storage: E2IStorage,
    mlflow: MlflowTracker,
) -> dg.Output[dict]:
    config.check()
    _check_columns(dataset, outcome_model)
    background = _background(dataset, outcome_model, config)
    fanout = open_fanout(context, config.fan_out)
    explainer = _explainer(context, outcome_model, config.method,
                           config.feature_perturbation, background)
    total = parquet_rows(dataset.path, config.max_rows)
    progress = Progress(context.log, total, "shap_explanations", every_seconds=0.0)
    final = storage.output_dir(context)
    with storage.atomic_output(final) as tmp, fanout or nullcontext():
        result = explain_parquet(
            explainer, dataset.path, tmp / "attributions.parquet", dataset.id_column,
            outcome_model.model_frame, chunk_rows=config.chunk_rows, max_rows=config.max_rows,
            sample_rows=config.sample_rows, seed=config.seed, on_chunk=progress.advance,
            mapper=fanout,
        )
        if result.max_additivity_error > ADDITIVITY_TOLERANCE:
            raise dg.Failure(f"SHAP additivity violated: max |sum(phi) + base - raw| = "
                             f"{result.max_additivity_error:.3g} > {ADDITIVITY_TOLERANCE}")
        importance = result.importance()
        pngs = _figures(tmp, importance, result.sample.shap, result.sample.features,
                        result.feature_names, config.top_k)
    run_id = _log_mlflow(
        context, mlflow, "shap_explanations", final,
        params={"method": result.method, "rows": result.rows, "chunk_rows": config.chunk_rows,
                "feature_perturbation": config.feature_perturbation,
                "background_rows": 0 if background is None else len(background),
                "background_source": config.background_source if background is not None else "",
                "threads": n_jobs(), "model_mlflow_run_id": outcome_model.mlflow_run_id or "",
                "fallback_reason": result.fallback_reason or ""},
        metrics={"rows_per_second": result.rows_per_second, "seconds": result.seconds,
                 "max_additivity_error": result.max_additivity_error,
                 "base_value": result.base_value},
    )
    attributions = str(final / "attributions.parquet")
    top = _top_features(importance, config.top_k)
    context.log.info(f"explained {result.rows:,} rows in {result.seconds:.1f}s "
                     f"({result.rows_per_second:,.0f} rows/s, {result.method}); "
                     f"max additivity error {result.max_additivity_error:.2e}")
    value = {"attributions_path": attributions, "base_value": result.base_value,
             "rows": result.rows, "method": result.method,
             "feature_perturbation": config.feature_perturbation, "top_features": top,
             "mlflow_run_id": run_id}
    return dg.Output(value, metadata={
        "rows": result.rows,
        "feature_perturbation": config.feature_perturbation,
        "background_rows": 0 if background is None else len(background),
        "rows_per_second": float(result.rows_per_second),
        "seconds": float(result.seconds),
        "method": result.method,
        "fallback_reason": result.fallback_reason or "",
        "base_value": float(result.base_value),
        "max_additivity_error": float(result.max_additivity_error),
        "mlflow_run_id": run_id,
        "attributions_path": dg.MetadataValue.path(attributions),
        "top_features": dg.MetadataValue.json(top),
        "importance": dg.MetadataValue.md(importance.head(config.top_k).to_markdown(index=False)),
        "shap_beeswarm": png_metadata(pngs["beeswarm"], "SHAP beeswarm"),
        "shap_bar": png_metadata(pngs["bar"], "SHAP importance"),
        **fanout_metadata(context, fanout),
    })


@dg.asset(
    group_name="explain",
    description="Global SHAP summary of the outcome model on a uniform row sample "
                "(exact TreeSHAP per sampled row; quick look before the full run).",
    **asset_tier_kwargs(Tier.MEDIUM),
)
def shap_summary(
    context: dg.AssetExecutionContext,
    config: ShapSummaryConfig,
    dataset: DatasetRef,
    outcome_model: ModelRef,
    storage: E2IStorage,
    mlflow: MlflowTracker,
) -> dg.Output[dict]:
    config.check()
    _check_columns(dataset, outcome_model)
    explainer = _explainer(context, outcome_model, "fast")
    columns = list(dict.fromkeys([dataset.id_column, *outcome_model.feature_names]))
    k = min(config.sample_rows, parquet_rows(dataset.path))
    frame = sample_rows(dataset.path, columns, k, config.seed)
    X = model_matrix(explainer.booster, outcome_model.model_frame(frame))
    phi = explainer.shap_values(X)
    error = additivity_error(phi, explainer.base_value, explainer.library_raw_score(X))
    if error > ADDITIVITY_TOLERANCE:
        raise dg.Failure(f"SHAP additivity violated on the sample: {error:.3g}")
    names = explainer.feature_names
    importance = pd.DataFrame({"feature": names, "mean_abs_shap": np.abs(phi).mean(axis=0),
                               "mean_shap": phi.mean(axis=0)})
    importance = importance.sort_values("mean_abs_shap", ascending=False, ignore_index=True)
    final = storage.output_dir(context)
    with storage.atomic_output(final) as tmp:
        pngs = _figures(tmp, importance, phi, X, names, config.top_k)
    run_id = _log_mlflow(context, mlflow, "shap_summary", final,
                         params={"sample_rows": len(frame), "seed": config.seed},
                         metrics={"max_additivity_error": error})
    top = _top_features(importance, config.top_k)
    return dg.Output({"top_features": top, "rows": len(frame), "mlflow_run_id": run_id},
                     metadata={
        "rows": len(frame),
        "method": explainer.method,
        "max_additivity_error": error,
        "mlflow_run_id": run_id,
        "top_features": dg.MetadataValue.json(top),
        "importance": dg.MetadataValue.md(importance.head(config.top_k).to_markdown(index=False)),
        "shap_beeswarm": png_metadata(pngs["beeswarm"], "SHAP beeswarm (sample)"),
        "shap_bar": png_metadata(pngs["bar"], "SHAP importance (sample)"),
    })


assets = [shap_explanations, shap_summary]
