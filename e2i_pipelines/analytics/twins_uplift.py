"""Individual uplift of a LightGBM outcome model: f(x, treated) - f(x, untreated).

Trees that never split on the treatment give the same leaf for both arms, so the difference
only needs the trees that do (often a third of the ensemble). ``TreeUplift`` walks just those
trees, both arms, in a parallel numba kernel (LightGBM's decision rules, shared with the
TreeSHAP code); ``booster_uplift`` is the reference: two ``booster.predict`` calls.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numba import njit, prange

from e2i_pipelines.analytics.treeshap import model_matrix
from e2i_pipelines.analytics.treeshap_kernels import _goes_left, set_threads
from e2i_pipelines.analytics.treeshap_model import FlatEnsemble, flatten_booster


def with_treatment(frame: pd.DataFrame, treatment: str, value: int) -> pd.DataFrame:
    """Copy of ``frame`` with every row's treatment set to ``value``."""
    out = frame.copy()
    out[treatment] = np.asarray(value, dtype=frame[treatment].dtype)
    return out


def booster_uplift(booster: Any, frame: pd.DataFrame, treatment: str) -> np.ndarray:
    """Reference uplift: ``booster.predict`` with everyone treated minus everyone untreated."""
    treated = booster.predict(with_treatment(frame, treatment, 1))
    untreated = booster.predict(with_treatment(frame, treatment, 0))
    return np.asarray(treated) - np.asarray(untreated)


@njit(parallel=True, cache=True)
def _uplift_kernel(X, t_col, roots, node_threshold, node_kind, node_default_left, node_missing,
                   node_left, node_right, node_feature, node_cat_offset, node_cat_len,
                   cat_words, leaf_value, out):
    """out[r] = sum over ``roots`` of leaf(x_r, t=1) - leaf(x_r, t=0)."""
    for r in prange(X.shape[0]):
        acc = 0.0
        for t in range(roots.shape[0]):
            for arm in range(2):
                nd = roots[t]
                while nd >= 0:
                    f = node_feature[nd]
                    x = (1.0 - arm) if f == t_col else X[r, f]
                    if _goes_left(x, nd, node_threshold, node_kind, node_default_left,
                                  node_missing, node_cat_offset, node_cat_len, cat_words):
                        nd = node_left[nd]
                    else:
                        nd = node_right[nd]
                if arm == 0:
                    acc += leaf_value[~nd]
                else:
                    acc -= leaf_value[~nd]
        out[r] = acc


def _tree_uses(flat: FlatEnsemble, root: int, feature: int) -> bool:
    stack = [root]
    while stack:
        nd = stack.pop()
        if nd < 0:
            continue
        if flat.node_feature[nd] == feature:
            return True
        stack.extend((int(flat.node_left[nd]), int(flat.node_right[nd])))
    return False


class TreeUplift:
    """Exact uplift from only the trees that split on the treatment (numba, parallel)."""

    def __init__(self, booster: Any, treatment: str, n_threads: int = 1) -> None:
        names = booster.feature_name()
        if treatment not in names:
            raise ValueError(f"treatment {treatment!r} is not a model feature; features: {names}")
        self.booster = booster
        self.treatment = treatment
        self.flat = flatten_booster(booster)
        self.t_col = names.index(treatment)
        roots = [int(r) for r in self.flat.tree_root if _tree_uses(self.flat, int(r), self.t_col)]
        self.roots = np.asarray(roots, dtype=np.int32)
        self.n_threads = n_threads

    @property
    def trees_used(self) -> int:
        return len(self.roots)

    @property
    def trees_total(self) -> int:
        return int(self.booster.num_trees())

    def uplift(self, frame: pd.DataFrame) -> np.ndarray:
        """f(x, 1) - f(x, 0) per row of the model input ``frame``."""
        X = model_matrix(self.booster, frame)
        out = np.zeros(len(X))
        if len(X) and len(self.roots):
            set_threads(self.n_threads)
            f = self.flat
            _uplift_kernel(X, self.t_col, self.roots, f.node_threshold, f.node_kind,
                           f.node_default_left, f.node_missing, f.node_left, f.node_right,
                           f.node_feature, f.node_cat_offset, f.node_cat_len, f.cat_words,
                           f.leaf_value, out)
        return out
