"""SHAP figures: beeswarm (summary) on the sampled rows, bar chart of global mean |SHAP|."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def beeswarm_figure(shap_values: np.ndarray, features: np.ndarray, names: list[str],
                    max_display: int = 15) -> plt.Figure:
    """shap's summary (beeswarm) plot of a sample; categoricals are coloured by code."""
    import shap

    if len(shap_values) == 0:
        raise ValueError("no rows to plot")
    plt.figure()
    shap.summary_plot(shap_values, pd.DataFrame(features, columns=names),
                      max_display=max_display, show=False, plot_size=(8, 0.4 * min(
                          max_display, len(names)) + 1.5))
    fig = plt.gcf()
    fig.suptitle(f"SHAP summary ({len(shap_values):,} sampled rows)", y=1.0)
    return fig


def importance_bar_figure(importance: pd.DataFrame, max_display: int = 15) -> plt.Figure:
    """Horizontal bars of mean |SHAP| over all explained rows (largest at the top)."""
    top = importance.head(max_display).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(top) + 1.2))
    ax.barh(top["feature"], top["mean_abs_shap"], color="#1E88E5")
    ax.set_xlabel("mean |SHAP value| (raw score units)")
    ax.set_title("Global feature importance (exact TreeSHAP, all rows)")
    return fig
