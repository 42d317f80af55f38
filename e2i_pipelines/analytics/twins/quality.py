"""Column shapes and column pair trends of twins vs real rows, with SDMetrics' definitions.

* shape of a numeric column: KSComplement = 1 - two-sample KS statistic;
* shape of a discrete column: TVComplement = 1 - total variation distance of the level
  frequencies (over the union of levels);
* pair of numeric columns: CorrelationSimilarity = 1 - |Pearson r real - r twins| / 2;
* any other pair: ContingencySimilarity = 1 - total variation distance of the joint frequency
  table, numeric columns cut into ``bins`` bins with edges from the real column
  (``numpy.histogram_bin_edges``, outer edges open), as ``sdmetrics.utils.discretize_column``.

Scores are in [0, 1], 1 = identical. Our own numpy code (tests check it equals SDMetrics).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp


def _as_codes(real: pd.Series, twins: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes of both columns over the union of their values."""
    levels = pd.unique(pd.concat([real.astype(object), twins.astype(object)], ignore_index=True))
    cat = pd.CategoricalDtype(levels)
    return (real.astype(object).astype(cat).cat.codes.to_numpy(np.int64),
            twins.astype(object).astype(cat).cat.codes.to_numpy(np.int64), len(levels))


def ks_complement(real: pd.Series, twins: pd.Series) -> float:
    """SDMetrics KSComplement: 1 - the two-sample Kolmogorov-Smirnov statistic."""
    return float(1.0 - ks_2samp(real.to_numpy(np.float64), twins.to_numpy(np.float64)).statistic)


def tv_complement(real: pd.Series, twins: pd.Series) -> float:
    """SDMetrics TVComplement: 1 - total variation distance of the level frequencies."""
    r, t, k = _as_codes(real, twins)
    fr = np.bincount(r, minlength=k) / len(r)
    ft = np.bincount(t, minlength=k) / len(t)
    return float(1.0 - 0.5 * np.abs(fr - ft).sum())


def column_shapes(real: pd.DataFrame, twins: pd.DataFrame, numeric: list[str],
                  discrete: list[str]) -> dict[str, dict[str, Any]]:
    """Per column: metric name and score."""
    out: dict[str, dict[str, Any]] = {}
    for c in numeric:
        out[c] = {"metric": "KSComplement", "score": ks_complement(real[c], twins[c])}
    for c in discrete:
        out[c] = {"metric": "TVComplement", "score": tv_complement(real[c], twins[c])}
    return out


def correlation_similarity(real: pd.DataFrame, twins: pd.DataFrame, a: str, b: str) -> dict:
    """SDMetrics CorrelationSimilarity (Pearson) of columns ``a`` and ``b``."""
    r = float(np.corrcoef(real[a].to_numpy(np.float64), real[b].to_numpy(np.float64))[0, 1])
    t = float(np.corrcoef(twins[a].to_numpy(np.float64), twins[b].to_numpy(np.float64))[0, 1])
    t = 0.0 if np.isnan(t) else t  # a constant twin column has no correlation
    return {"metric": "CorrelationSimilarity", "score": 1.0 - abs(r - t) / 2.0,
            "real": r, "twins": t}


def discretize(real: pd.Series, twins: pd.Series, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Bin codes of a numeric column, edges from the real values (outer edges open)."""
    edges = np.histogram_bin_edges(real.to_numpy(np.float64), bins=bins)
    edges[0], edges[-1] = -np.inf, np.inf
    return (np.digitize(real.to_numpy(np.float64), edges),
            np.digitize(twins.to_numpy(np.float64), edges))


def contingency_similarity(ra: np.ndarray, rb: np.ndarray, ta: np.ndarray,
                           tb: np.ndarray) -> float:
    """SDMetrics ContingencySimilarity of two integer-coded columns (real ra, rb; twins ta, tb)."""
    ka = int(max(ra.max(), ta.max())) + 1
    kb = int(max(rb.max(), tb.max())) + 1
    fr = np.bincount(ra * kb + rb, minlength=ka * kb) / len(ra)
    ft = np.bincount(ta * kb + tb, minlength=ka * kb) / len(ta)
    return float(1.0 - 0.5 * np.abs(fr - ft).sum())


def pair_trends(real: pd.DataFrame, twins: pd.DataFrame, numeric: list[str],
                discrete: list[str], bins: int = 10) -> list[dict[str, Any]]:
    """Every column pair: CorrelationSimilarity if both numeric, else ContingencySimilarity."""
    codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for c in numeric:
        codes[c] = discretize(real[c], twins[c], bins)
    for c in discrete:
        r, t, _ = _as_codes(real[c], twins[c])
        codes[c] = (r, t)
    out = []
    for a, b in combinations([*numeric, *discrete], 2):
        if a in numeric and b in numeric:
            row = correlation_similarity(real, twins, a, b)
        else:
            (ra, ta), (rb, tb) = codes[a], codes[b]
            row = {"metric": "ContingencySimilarity",
                   "score": contingency_similarity(ra, rb, ta, tb)}
        out.append({"columns": [a, b], **row})
    return out
