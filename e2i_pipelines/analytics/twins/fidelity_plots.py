"""One figure per twin fidelity check (rendered by :func:`core.plots.figure_png`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from e2i_pipelines.analytics.twins.interventions import Z95


def _plt():
    import matplotlib.pyplot as plt

    return plt


def shapes_figure(scores: dict[str, float], threshold: float):
    """Score per column, the pass threshold as a line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(scores) + 1.5))
    names = list(scores)
    vals = [scores[c] for c in names]
    ax.barh(names, vals, color=["tab:blue" if v >= threshold else "tab:red" for v in vals])
    ax.axvline(threshold, color="k", ls="--", label=f"pass >= {threshold}")
    ax.set_xlim(min(0.8, min(vals) - 0.02), 1.0)
    ax.set_xlabel("KS / TV complement (1 = same distribution)")
    ax.set_title("Column shapes: twins vs real")
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def pairs_figure(rows: list[dict[str, Any]], columns: list[str], threshold: float):
    """Heatmap of the pair scores."""
    plt = _plt()
    k = len(columns)
    grid = np.ones((k, k))
    pos = {c: i for i, c in enumerate(columns)}
    for r in rows:
        a, b = (pos[c] for c in r["columns"])
        grid[a, b] = grid[b, a] = r["score"]
    fig, ax = plt.subplots(figsize=(0.45 * k + 3, 0.45 * k + 2))
    im = ax.imshow(grid, cmap="RdYlGn", vmin=min(threshold - 0.1, grid.min()), vmax=1.0)
    ax.set_xticks(range(k), columns, rotation=90, fontsize=7)
    ax.set_yticks(range(k), columns, fontsize=7)
    ax.set_title(f"Column pair trends (pass: every pair >= {threshold})")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def detection_figure(labels: np.ndarray, scores: np.ndarray, auc: float):
    """ROC curve of the real-vs-twin classifier (out-of-fold scores)."""
    from sklearn.metrics import roc_curve

    plt = _plt()
    fpr, tpr, _ = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], "k--", label="indistinguishable")
    ax.set_xlabel("false positive rate (real called twin)")
    ax.set_ylabel("true positive rate (twin called twin)")
    ax.set_title("Detection: real vs twin classifier")
    ax.legend()
    fig.tight_layout()
    return fig


def utility_figure(res: dict[str, Any]):
    """Predicted vs real outcome on real test rows: trained on real vs trained on twins."""
    plt = _plt()
    y = res["test_outcome"]
    take = np.arange(min(len(y), 3_000))
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(y[take], res["trtr_pred"][take], s=3, alpha=0.4,
               label=f"trained on real: R² {res['trtr_r2']:.3f}")
    ax.scatter(y[take], res["tstr_pred"][take], s=3, alpha=0.4,
               label=f"trained on twins: R² {res['tstr_r2']:.3f}")
    lo, hi = float(np.min(y)), float(np.max(y))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("real outcome (test rows)")
    ax.set_ylabel("predicted outcome")
    ax.set_title("ML utility: TSTR vs TRTR")
    ax.legend(markerscale=4)
    fig.tight_layout()
    return fig


def privacy_figure(res: dict[str, Any], copies: dict[str, Any]):
    """DCR distributions of twins and of real holdout rows to the real reference."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    top = float(np.quantile(np.r_[res["dcr_twins"], res["dcr_holdout"]], 0.99))
    bins = np.linspace(0.0, max(top, 1e-6), 60)
    ax.hist(res["dcr_holdout"], bins=bins, alpha=0.6, label="real holdout -> real")
    ax.hist(res["dcr_twins"], bins=bins, alpha=0.6, label="twins -> real")
    ax.set_xlabel("distance to closest real record")
    ax.set_title(f"Privacy: {100 * copies['exact_copy_share']:.3f}% exact copies; median DCR "
                 f"twins {res['median_dcr_twins']:.4f} vs holdout {res['median_dcr_holdout']:.4f}",
                 fontsize=9)
    ax.legend()
    fig.tight_layout()
    return fig


def causal_figure(n: dict[str, Any]):
    """Data ATE/ATT with 95% CI and the twins' simulated values."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, est in enumerate(("ate", "att")):
        d = n[f"data_{est}"]
        ax.errorbar(i - 0.1, d, yerr=Z95 * n[f"data_{est}_se"], fmt="o",
                    capsize=6, color="tab:blue", label="data (95% CI)" if i == 0 else None)
        ax.errorbar(i + 0.1, n[f"twins_{est}"], yerr=Z95 * n[f"twins_{est}_se"],
                    fmt="s", capsize=6, color="tab:orange", label="twins" if i == 0 else None)
    ax.set_xticks([0, 1], ["ATE", "ATT"])
    ax.set_ylabel("effect on the outcome")
    ax.set_title("Causal fidelity: data (doubly robust) vs twins (simulated)")
    ax.legend()
    fig.tight_layout()
    return fig
