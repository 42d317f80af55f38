"""Overlap / positivity (:func:`overlap_summary`, :func:`overlap_plot`)
    ``share_outside`` is the share of rows whose propensity lies outside ``OVERLAP_BOUNDS``
    = [0.01, 0.99] (the bounds themselves are inside; NaN counts as outside);
    ``share_outside_treated`` / ``share_outside_control`` are the same share within each arm.

    Status: "pass" if share_outside <= ``OVERLAP_WARN_SHARE`` (1 %), "warn" if
    share_outside <= ``OVERLAP_FAIL_SHARE`` (10 %), otherwise "fail".
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from e2i_pipelines.analytics.causal.diagnostics.inputs import (  # noqa: E402
    as_propensity,
    as_treated,
)

OVERLAP_BOUNDS = (0.01, 0.99)
OVERLAP_WARN_SHARE = 0.01
OVERLAP_FAIL_SHARE = 0.10
OVERLAP_RULE = ("share of rows with propensity outside [{lo:g}, {hi:g}]: pass if <= {warn:g}, "
                "warn if <= {fail:g}, else fail")


def _overlap_status(share_outside: float) -> str:
    """pass / warn / fail by the share of rows outside the bounds."""
    if share_outside <= OVERLAP_WARN_SHARE:
        return "pass"
    return "warn" if share_outside <= OVERLAP_FAIL_SHARE else "fail"


def overlap_summary(propensity: np.ndarray, t: np.ndarray,
                    bounds: tuple[float, float] = OVERLAP_BOUNDS) -> dict:
    """Shares of rows outside bounds (all / per arm), propensity range per arm, status, rule."""
    e = as_propensity(propensity)
    t = as_treated(t, len(e))
    lo, hi = float(bounds[0]), float(bounds[1])
    outside = ~((e >= lo) & (e <= hi))
    n1 = int(np.count_nonzero(t))
    out1 = int(np.count_nonzero(outside & t))
    out_all = int(np.count_nonzero(outside))
    share = out_all / len(e)
    e1, e0 = e[t], e[~t]
    return {
        "share_outside": float(share),
        "share_outside_treated": float(out1 / n1),
        "share_outside_control": float((out_all - out1) / (len(e) - n1)),
        "min_propensity_treated": float(np.nanmin(e1)),
        "max_propensity_treated": float(np.nanmax(e1)),
        "min_propensity_control": float(np.nanmin(e0)),
        "max_propensity_control": float(np.nanmax(e0)),
        "bound_low": lo,
        "bound_high": hi,
        "status": _overlap_status(share),
        "rule": OVERLAP_RULE.format(lo=lo, hi=hi, warn=OVERLAP_WARN_SHARE,
                                    fail=OVERLAP_FAIL_SHARE),
    }


def overlap_plot(propensity: np.ndarray, t: np.ndarray,
                 bounds: tuple[float, float] = OVERLAP_BOUNDS) -> Figure:
    """Overlaid density histograms of the propensity by arm; the region outside bounds shaded."""
    e = as_propensity(propensity)
    t = as_treated(t, len(e))
    edges = np.linspace(0.0, 1.0, 51)
    fig, ax = plt.subplots(figsize=(7, 4))
    for mask, label, color in ((~t, "control", "#555555"), (t, "treated", "#1E88E5")):
        counts, _ = np.histogram(e[mask], bins=edges, density=True)
        ax.stairs(counts, edges, fill=True, alpha=0.45, color=color, label=label)
    ax.axvspan(0.0, bounds[0], color="#D81B60", alpha=0.15, label="outside bounds")
    ax.axvspan(bounds[1], 1.0, color="#D81B60", alpha=0.15)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("propensity score P(t = 1 | X)")
    ax.set_ylabel("density")
    ax.set_title("Propensity overlap by treatment arm")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
