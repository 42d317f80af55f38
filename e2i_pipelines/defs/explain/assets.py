"""SHAP assets: exact per-row attributions of the whole population, and a sampled summary."""

from contextlib import nullcontext

import dagster as dg
import pandas as pd

from e2i_pipelines.analytics.explain.background import sample_background, sample_rows
from e2i_pipelines.analytics.explain.report import (
    ADDITIVITY_TOLERANCE,
    ATTRIBUTIONS_FILE,
    importance_table,
    population_outputs,
    shap_outputs,
)
from e2i_pipelines.analytics.explain.stream import explain_parquet, parquet_rows
from e2i_pipelines.analytics.explain.treeshap import (
    TreeShapExplainer,
    additivity_error,
    model_matrix,
)
from e2i_pipelines.core.budget import n_jobs
from e2i_pipelines.core.fanout import fanout_metadata, open_fanout
from e2i_pipelines.core.outputs import asset_outputs, write_outputs
from e2i_pipelines.core.progress import Progress
from e2i_pipelines.core.refs import DatasetRef, ModelRef
from e2i_pipelines.core.storage import E2IStorage, parquet_file
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.explain.config import ShapConfig, ShapSummaryConfig
from e2i_pipelines.tiers import Tier, asset_tier_kwargs


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
    background_rows = 0 if background is None else len(background)
    with asset_outputs(context, storage, mlflow, "shap_explanations") as out, \
            fanout or nullcontext():
        result = explain_parquet(
            explainer, dataset.path, out.folder / ATTRIBUTIONS_FILE, dataset.id_column,
            outcome_model.model_frame, chunk_rows=config.chunk_rows, max_rows=config.max_rows,
            sample_rows=config.sample_rows, seed=config.seed, on_chunk=progress.advance,
            mapper=fanout,
        )
        if result.max_additivity_error > ADDITIVITY_TOLERANCE:
            raise dg.Failure(f"SHAP additivity violated: max |sum(phi) + base - raw| = "
                             f"{result.max_additivity_error:.3g} > {ADDITIVITY_TOLERANCE}")
        out.write(population_outputs(result, config.top_k, params={
            "method": result.method, "rows": result.rows, "chunk_rows": config.chunk_rows,
            "feature_perturbation": config.feature_perturbation,
            "background_rows": background_rows,
            "background_source": config.background_source if background is not None else "",
            "threads": n_jobs(), "model_mlflow_run_id": outcome_model.mlflow_run_id or "",
            "fallback_reason": result.fallback_reason or ""},
            feature_perturbation=config.feature_perturbation, background_rows=background_rows))
    context.log.info(f"explained {result.rows:,} rows in {result.seconds:.1f}s "
                     f"({result.rows_per_second:,.0f} rows/s, {result.method}); "
                     f"max additivity error {result.max_additivity_error:.2e}")
    value = {"attributions_path": out.path(ATTRIBUTIONS_FILE), "base_value": result.base_value,
             "rows": result.rows, "method": result.method,
             "feature_perturbation": config.feature_perturbation,
             "top_features": out.outputs.metadata["top_features"], "mlflow_run_id": out.run_id}
    return dg.Output(value, metadata={**out.metadata, **fanout_metadata(context, fanout)})


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
    outputs = shap_outputs(importance_table(phi, explainer.feature_names), phi, X,
                           explainer.feature_names, config.top_k, " (sample)")
    outputs.metadata = {"rows": len(frame), "method": explainer.method,
                        "max_additivity_error": error, **outputs.metadata}
    outputs.params = {"sample_rows": len(frame), "seed": config.seed}
    outputs.metrics = {"max_additivity_error": error}
    written = write_outputs(context, storage, mlflow, "shap_summary", outputs)
    return dg.Output({"top_features": outputs.metadata["top_features"], "rows": len(frame),
                      "mlflow_run_id": written.run_id}, metadata=written.metadata)


assets = [shap_explanations, shap_summary]
