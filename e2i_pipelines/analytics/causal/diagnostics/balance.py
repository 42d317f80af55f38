"""Covariate balance (:func:`balance_table`, :func:`balance_passed`, :func:`love_plot`)
    Standardised mean difference of every column of X::

        SMD = (mean_treated - mean_control) / sqrt((var_treated + var_control) / 2)

    ``smd_before`` uses plain group means, ``smd_after`` weighted group means (weights
    normalised to sum to 1 within each arm). The denominator is the same for both: the
    UNWEIGHTED sample variances (ddof = 1) of the two arms (the cobalt / Austin 2009
    convention), so before and after differ only by the numerator. A column whose two means
    are equal (e.g. a constant column) has SMD 0; a column that is constant within each arm
    but differs between them has SMD +-inf.

    Pass rule: every ``|smd_after| <= BALANCE_THRESHOLD`` (0.1). NaN fails.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from e2i_pipelines.analytics.causal.diagnostics.inputs import (  # noqa: E402
    as_matrix,
    as_treated,
    as_vector,
    row_blocks,
)

BALANCE_THRESHOLD = 0.1
BALANCE_RULE = ("pass if every |SMD after weighting| <= {threshold:g} (SMD denominator: "
                "unweighted pooled SD of the two arms)")


def _arm_moments(X: np.ndarray, t: np.ndarray, w: np.ndarray):
    """Per column: plain and weighted arm means, and unweighted arm variances (ddof=1).

    One pass over X in row blocks. The means are of X shifted by its first row (differences
    of means are shift-invariant; no cancellation for large offsets; exact 0 for constants).
    """
    n, p = X.shape
    shift = X[0].copy()
    sums = np.zeros((p, 4))  # columns: treated, control, weighted treated, weighted control
    squares = np.zeros((p, 2))  # unweighted sum of squares per arm
    totals = np.zeros(4)
    for a, b in row_blocks(n):
        tb = t[a:b].astype(np.float64)
        V = np.column_stack([tb, 1.0 - tb, w[a:b] * tb, w[a:b] * (1.0 - tb)])
        D = X[a:b] - shift
        sums += D.T @ V
        totals += V.sum(axis=0)
        squares += np.square(D, out=D).T @ V[:, :2]
    if totals[2] <= 0 or totals[3] <= 0:
        raise ValueError("weights must have a positive sum in each arm")
    means = sums / totals
    counts = totals[:2]
    if counts.min() < 2:
        raise ValueError("each treatment arm needs at least 2 rows")
    var = (squares - counts * means[:, :2] ** 2) / (counts - 1)
    return means, np.maximum(var, 0.0)


def _smd(diff: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """diff / sd with 0 where diff is 0 and +-inf where only sd is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = diff / sd
    return np.where(diff == 0, 0.0, out)


def balance_table(X: np.ndarray, names: list[str], t: np.ndarray,
                  weights: np.ndarray) -> pd.DataFrame:
    """Columns covariate, smd_before, smd_after: one row per column of X, in order."""
    X = as_matrix(X, names)
    n = X.shape[0]
    t = as_treated(t, n)
    w = as_vector(weights, n, "weights")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and non-negative")
    means, var = _arm_moments(X, t, w)
    sd = np.sqrt((var[:, 0] + var[:, 1]) / 2.0)
    return pd.DataFrame({
        "covariate": list(names),
        "smd_before": _smd(means[:, 0] - means[:, 1], sd),
        "smd_after": _smd(means[:, 2] - means[:, 3], sd),
    })


def balance_passed(table: pd.DataFrame, threshold: float = BALANCE_THRESHOLD) -> bool:
    """True if every |smd_after| <= threshold (NaN fails)."""
    return bool(np.all(np.abs(table["smd_after"].to_numpy(dtype=float)) <= threshold))


def love_plot(table: pd.DataFrame, threshold: float = BALANCE_THRESHOLD) -> Figure:
    """|SMD| before (open) and after (filled) weighting per covariate; dashed threshold line."""
    order = table.assign(_b=table["smd_before"].abs()).sort_values("_b", kind="stable")
    rows = np.arange(len(order))
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(order) + 1.5))
    ax.scatter(order["smd_before"].abs(), rows, facecolors="none", edgecolors="#555555",
               label="before weighting")
    ax.scatter(order["smd_after"].abs(), rows, color="#1E88E5", label="after weighting")
    ax.axvline(threshold, color="#D81B60", linestyle="--", linewidth=1,
               label=f"threshold {threshold:g}")
    ax.set_yticks(rows, order["covariate"].tolist())
    ax.set_xlabel("|standardised mean difference|")
    ax.set_title("Covariate balance (love plot)")
    ax.set_xlim(left=0)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
