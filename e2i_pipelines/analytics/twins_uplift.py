"""Individual uplift of a LightGBM outcome model: f(x, treated) - f(x, untreated).

Trees that never split on the treatment give the same leaf for both arms, so the difference
only needs the trees that do; within those, both arms share the path to the first treatment
split, and a row that leaves the part of a tree holding treatment splits contributes nothing.
``TreeUplift`` walks only what differs, in a parallel numba kernel (LightGBM's decision rules, shared with the
TreeSHAP code); ``booster_uplift`` is the reference: two ``booster.predict`` calls.
"""

from __future__ import annotations

import math
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


_BLOCK = 1024  # rows per parallel block


@njit(cache=True, inline="always")
def _step(x, nd, simple, child2, node_threshold, node_kind, node_default_left, node_missing,
          node_left, node_right, node_cat_offset, node_cat_len, cat_words):
    """Next node. Plain numerical splits on non-missing values go branch-free."""
    if simple[nd] and not math.isnan(x):
        return child2[2 * nd + (x > node_threshold[nd])]
    if _goes_left(x, nd, node_threshold, node_kind, node_default_left, node_missing,
                  node_cat_offset, node_cat_len, cat_words):
        return node_left[nd]
    return node_right[nd]


@njit(parallel=True, cache=True)
def _uplift_kernel(X, t_col, roots, has_t, simple, child2, node_threshold, node_kind,
                   node_default_left, node_missing, node_left, node_right, node_feature,
                   node_cat_offset, node_cat_len, cat_words, leaf_value, out):
    """out[r] = sum over ``roots`` of leaf(x_r, t=1) - leaf(x_r, t=0).

    Both arms share the path down to the first treatment split; a row that leaves the part of
    the tree holding treatment splits (``has_t`` false) reaches the same leaf in both arms.
    """
    n = X.shape[0]
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):  # tree-major within a block: a tree's nodes stay in L1
        lo = b * _BLOCK
        hi = min(n, lo + _BLOCK)
        for r in range(lo, hi):
            out[r] = 0.0
        for t in range(roots.shape[0]):
            root = roots[t]
            for r in range(lo, hi):
                nd = root
                while nd >= 0 and has_t[nd] and node_feature[nd] != t_col:
                    nd = _step(X[r, node_feature[nd]], nd, simple, child2, node_threshold,
                               node_kind, node_default_left, node_missing, node_left,
                               node_right, node_cat_offset, node_cat_len, cat_words)
                if nd < 0 or not has_t[nd]:
                    continue
                # the two arms walk in lockstep: independent chains of loads overlap
                nd1, nd0 = nd, nd
                while nd1 >= 0 or nd0 >= 0:
                    if nd1 >= 0:
                        f1 = node_feature[nd1]
                        nd1 = _step(1.0 if f1 == t_col else X[r, f1], nd1, simple, child2,
                                    node_threshold, node_kind, node_default_left, node_missing,
                                    node_left, node_right, node_cat_offset, node_cat_len,
                                    cat_words)
                    if nd0 >= 0:
                        f0 = node_feature[nd0]
                        nd0 = _step(0.0 if f0 == t_col else X[r, f0], nd0, simple, child2,
                                    node_threshold, node_kind, node_default_left, node_missing,
                                    node_left, node_right, node_cat_offset, node_cat_len,
                                    cat_words)
                out[r] += leaf_value[~nd1] - leaf_value[~nd0]


def _subtree_has_feature(flat: FlatEnsemble, feature: int) -> np.ndarray:
    """Per node: does its subtree split on ``feature``? (children have larger indices)."""
    has = flat.node_feature == feature
    for nd in range(len(has) - 1, -1, -1):
        for child in (flat.node_left[nd], flat.node_right[nd]):
            if child >= 0 and has[child]:
                has[nd] = True
    return has


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
        self.has_t = _subtree_has_feature(self.flat, self.t_col)
        roots = [int(r) for r in self.flat.tree_root if r >= 0 and self.has_t[r]]
        f = self.flat
        # numerical splits whose missing type is not Zero: x > threshold decides (x not NaN)
        self.simple = (f.node_kind == 0) & (f.node_missing != 1)
        self.child2 = np.ascontiguousarray(np.stack([f.node_left, f.node_right], axis=1).ravel())
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
            _uplift_kernel(X, self.t_col, self.roots, self.has_t, self.simple, self.child2,
                           f.node_threshold, f.node_kind,
                           f.node_default_left, f.node_missing, f.node_left, f.node_right,
                           f.node_feature, f.node_cat_offset, f.node_cat_len, f.cat_words,
                           f.leaf_value, out)
        return out
