"""What the SHAP assets write: importance.csv, beeswarm and bar plots, metadata, MLflow."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from e2i_pipelines.analytics.explain.plots import beeswarm_figure, importance_bar_figure
from e2i_pipelines.analytics.explain.stream import ShapRunResult
from e2i_pipelines.core.outputs import FilePath, Outputs, Plot

ADDITIVITY_TOLERANCE = 1e-6
ATTRIBUTIONS_FILE = "attributions.parquet"
PLOT_FILES = ["importance.csv", "shap_beeswarm.png", "shap_bar.png"]


def importance_table(phi: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Features by mean |SHAP| (descending), with the mean SHAP."""
    table = pd.DataFrame({"feature": names, "mean_abs_shap": np.abs(phi).mean(axis=0),
                          "mean_shap": phi.mean(axis=0)})
    return table.sort_values("mean_abs_shap", ascending=False, ignore_index=True)


def top_features(importance: pd.DataFrame, k: int) -> list[dict]:
    return [{"feature": str(r.feature), "mean_abs_shap": float(r.mean_abs_shap)}
            for r in importance.head(k).itertuples()]


def shap_outputs(importance: pd.DataFrame, shap: np.ndarray, features: np.ndarray,
                 names: list[str], top_k: int, title_suffix: str = "") -> Outputs:
    """The plots, importance table and top features shared by both SHAP assets."""
    return Outputs(
        files={
            "importance.csv": importance.to_csv(index=False),
            "shap_beeswarm.png": Plot(beeswarm_figure(shap, features, names, top_k),
                                      f"SHAP beeswarm{title_suffix}", key="shap_beeswarm"),
            "shap_bar.png": Plot(importance_bar_figure(importance, top_k),
                                 f"SHAP importance{title_suffix}", key="shap_bar"),
        },
        metadata={"top_features": top_features(importance, top_k),
                  "importance": importance.head(top_k)},
        artifacts=PLOT_FILES)


def population_outputs(result: ShapRunResult, top_k: int, params: dict[str, Any],
                       feature_perturbation: str, background_rows: int) -> Outputs:
    """Outputs of ``shap_explanations`` (attributions.parquet is streamed beforehand)."""
    out = shap_outputs(result.importance(), result.sample.shap, result.sample.features,
                       result.feature_names, top_k)
    out.metadata = {
        "rows": result.rows, "feature_perturbation": feature_perturbation,
        "background_rows": background_rows, "rows_per_second": float(result.rows_per_second),
        "seconds": float(result.seconds), "method": result.method,
        "fallback_reason": result.fallback_reason or "",
        "base_value": float(result.base_value),
        "max_additivity_error": float(result.max_additivity_error),
        "attributions_path": FilePath(ATTRIBUTIONS_FILE), **out.metadata}
    out.params = params
    out.metrics = {"rows_per_second": result.rows_per_second, "seconds": result.seconds,
                   "max_additivity_error": result.max_additivity_error,
                   "base_value": result.base_value}
    return out
