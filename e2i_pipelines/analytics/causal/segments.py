"""Heterogeneous effects: the estimator's effect per segment of each effect modifier.

Numeric modifiers are cut at quantiles (``bins`` groups; fewer distinct values are used as
levels), categorical ones by level. A segment's effect is the fitted estimator's effect over
its rows (the target's rows within it: all, treated or controls), with its nuisance models
held fixed, and a normal CI from its standard error. Segments with fewer than
:data:`MIN_ROWS_PER_ARM` treated or control rows are reported without an estimate.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from e2i_pipelines.analytics.causal.estimators import FittedEffect, normal_ci  # noqa: E402

MIN_ROWS_PER_ARM = 10


def segment_masks(values: pd.Series, categorical: bool, bins: int
                  ) -> list[tuple[str, np.ndarray]]:
    """(label, boolean mask) per segment of one modifier's values."""
    if not categorical and values.nunique() > bins:
        cut = pd.qcut(values.astype(np.float64), q=bins, duplicates="drop")
        codes = cut.cat.codes.to_numpy()
        return [(str(level), codes == i) for i, level in enumerate(cut.cat.categories)]
    raw = values.astype(str).to_numpy() if categorical else values.to_numpy()
    return [(str(level), raw == level) for level in sorted(pd.unique(raw))]


def cate_table(tree_frame: pd.DataFrame, t: np.ndarray, modifiers: list[str],
               categorical: list[str], fit: FittedEffect, bins: int,
               level: float) -> pd.DataFrame:
    """One row per (modifier, segment): rows, treated, estimate, se, ci_low, ci_high."""
    records = []
    for mod in modifiers:
        for label, mask in segment_masks(tree_frame[mod], mod in categorical, bins):
            n1, n0 = int((mask & t).sum()), int((mask & ~t).sum())
            rec = {"modifier": mod, "segment": label, "n_rows": int(mask.sum()),
                   "n_treated": n1, "estimate": None, "se": None, "ci_low": None,
                   "ci_high": None}
            if min(n1, n0) >= MIN_ROWS_PER_ARM:
                est, se = fit.effect_on(mask)
                low, high = normal_ci(est, se, level)
                rec.update(estimate=est, se=se, ci_low=low, ci_high=high)
            records.append(rec)
    return pd.DataFrame.from_records(records, columns=[
        "modifier", "segment", "n_rows", "n_treated", "estimate", "se", "ci_low", "ci_high"])


def cate_plot(table: pd.DataFrame, overall: float, target: str) -> plt.Figure:
    """Effect and CI per segment, one panel per modifier, the overall effect dashed."""
    mods = list(dict.fromkeys(table["modifier"]))
    fig, axes = plt.subplots(len(mods), 1, figsize=(6, 1.2 + 0.45 * len(table)), squeeze=False)
    for ax, mod in zip(axes[:, 0], mods, strict=True):
        part = table[(table["modifier"] == mod) & table["estimate"].notna()]
        ypos = np.arange(len(part))
        est = part["estimate"].to_numpy(float)
        err = np.vstack([est - part["ci_low"].to_numpy(float),
                         part["ci_high"].to_numpy(float) - est])
        ax.errorbar(est, ypos, xerr=err, fmt="o", color="#4C72B0", capsize=3)
        ax.axvline(overall, ls="--", color="grey", label=f"overall {target.upper()}")
        ax.axvline(0, color="black", lw=0.6)
        ax.set_yticks(ypos, part["segment"])
        ax.set_title(f"effect by {mod}", fontsize=9)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
