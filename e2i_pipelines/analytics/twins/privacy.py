"""Privacy of twins: distance to the closest real record (DCR) and exact copies of real rows.

Distance between two rows (SDMetrics' DCR definition): the mean over columns of
``|a - b| / range`` for numeric columns (range of the real column) and ``a != b`` for discrete
ones, so 0 = same row, 1 = as far apart as possible. A random half of the real rows is the
*reference*; the DCR of each twin to the reference is compared with the DCR of each row of the
other real half (*holdout*: real people the reference does not contain) to the reference. Twins
that copy or barely perturb real people sit closer to the reference than the holdout does.

Exact copies are counted against every real row of the data file (row hashes, streamed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd


def _encode(frame: pd.DataFrame, numeric: list[str], discrete: list[str],
            lo: np.ndarray, span: np.ndarray, levels: dict[str, list[Any]]) -> np.ndarray:
    """Numeric columns scaled by the real range; discrete as one-hot x 0.5 (L1 mismatch = 1)."""
    parts = [(frame[numeric].to_numpy(np.float64) - lo) / span] if numeric else []
    for c in discrete:
        codes = pd.Categorical(frame[c].astype(object), categories=levels[c]).codes
        onehot = np.zeros((len(frame), len(levels[c]) + 1))
        onehot[np.arange(len(frame)), codes] = 0.5  # unseen levels (code -1) -> last slot
        parts.append(onehot)
    return np.hstack(parts)


def dcr(real: pd.DataFrame, twins: pd.DataFrame, numeric: list[str], discrete: list[str],
        *, seed: int = 0, n_jobs: int = 1) -> dict[str, Any]:
    """DCR of twins and of real holdout rows to the real reference half."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(real))
    half = len(real) // 2
    reference, holdout = real.iloc[order[:half]], real.iloc[order[half:]]
    n = min(len(holdout), len(twins))
    values = real[numeric].to_numpy(np.float64)
    lo = values.min(axis=0) if numeric else np.zeros(0)
    span = np.where(np.ptp(values, axis=0) > 0, np.ptp(values, axis=0), 1.0) if numeric \
        else np.zeros(0)
    levels = {c: list(pd.unique(real[c].astype(object))) for c in discrete}
    enc = [_encode(f, numeric, discrete, lo, span, levels)
           for f in (reference, holdout.iloc[:n], twins.iloc[:n])]
    tree = cKDTree(enc[0])
    width = len(numeric) + len(discrete)
    # safe: scipy KDTree nearest-neighbour queries on our own encoded arrays, not DataFrame.query
    d_holdout = tree.query(enc[1], k=1, p=1, workers=n_jobs)[0] / width
    d_twins = tree.query(enc[2], k=1, p=1, workers=n_jobs)[0] / width
    return {"dcr_twins": d_twins, "dcr_holdout": d_holdout,
            "median_dcr_twins": float(np.median(d_twins)),
            "median_dcr_holdout": float(np.median(d_holdout)),
            "share_twins_closer_than_holdout_median": float(
                np.mean(d_twins < np.median(d_holdout))),
            "reference_rows": len(reference), "compared_rows": n}


def row_hashes(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """uint64 hash per row of ``columns`` (values, not dtypes or category order)."""
    cols = {}
    for c in columns:
        s = frame[c]
        if isinstance(s.dtype, pd.CategoricalDtype):
            s = s.astype(object)
        elif pd.api.types.is_numeric_dtype(s):
            s = s.astype(np.float64)
        cols[c] = s
    return pd.util.hash_pandas_object(pd.DataFrame(cols), index=False).to_numpy()


def exact_copies(twins: pd.DataFrame, real_chunks: Iterable[pd.DataFrame],
                 columns: list[str]) -> dict[str, Any]:
    """Share of twins equal (on every modelled column) to some real row of ``real_chunks``."""
    mine = row_hashes(twins, columns)
    hit = np.zeros(len(mine), dtype=bool)
    real_rows = 0
    for chunk in real_chunks:
        hit |= np.isin(mine, row_hashes(chunk, columns))
        real_rows += len(chunk)
    return {"exact_copies": int(hit.sum()), "exact_copy_share": float(hit.mean()),
            "real_rows_hashed": real_rows, "twins_checked": len(mine)}
