"""Exact TreeSHAP for LightGBM boosters: fast numba tables, or LightGBM's own pred_contrib.

``TreeShapExplainer(booster, method="fast")`` gives the same numbers as
``shap.TreeExplainer(booster).shap_values(X)`` (which calls LightGBM's
``predict(pred_contrib=True)``), several times faster. Boosters the fast kernels cannot
handle (e.g. paths over 62 distinct features) fall back to LightGBM with the reason in ``fallback_reason``.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd

from e2i_pipelines.analytics.explain import kernels as kern
from e2i_pipelines.analytics.explain.model import (
    FlatEnsemble,
    LinearTreeError,
    UnsupportedModelError,
    flatten_booster,
    tree_slots,
)
from e2i_pipelines.analytics.explain.tree_scorer import QuickScorer

Method = Literal["fast", "lightgbm"]
METHODS: tuple[str, ...] = ("fast", "lightgbm")
DEFAULT_TABLE_DEPTH = 12  # leaves with more unique path features use the O(d^2) per-row path
DEFAULT_TABLE_BYTES = 512 * 2**20
_BLOCK_ROWS = 1024  # rows per parallel block: a tree's tables are reused across its rows

log = logging.getLogger(__name__)


def check_method(method: str) -> str:
    """Return ``method`` or raise naming the allowed values."""
    if method not in METHODS:
        raise ValueError(f"unknown SHAP method {method!r}; allowed: {list(METHODS)}")
    return method


def model_matrix(booster: Any, frame: pd.DataFrame | np.ndarray) -> np.ndarray:
    """Float64 matrix exactly as LightGBM sees ``frame``: categoricals as codes, missing NaN."""
    names = booster.feature_name()
    if isinstance(frame, np.ndarray):
        if frame.ndim != 2 or frame.shape[1] != len(names):
            raise ValueError(f"expected a 2-D array with {len(names)} columns, got {frame.shape}")
        return np.ascontiguousarray(frame, dtype=np.float64)
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise ValueError(f"input has no model feature(s) {missing}")
    trained_cats = list(getattr(booster, "pandas_categorical", None) or [])
    out = np.empty((len(frame), len(names)), dtype=np.float64)
    cat_i = 0
    for j, name in enumerate(names):
        col = frame[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            if cat_i < len(trained_cats):
                col = col.cat.set_categories(trained_cats[cat_i])
            cat_i += 1
            codes = col.cat.codes.to_numpy().astype(np.float64)
            codes[codes < 0] = np.nan
            out[:, j] = codes
        elif pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            out[:, j] = col.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            raise ValueError(
                f"feature {name!r} has dtype {col.dtype}; use numbers or pandas categoricals"
            )
    return out


class TreeShapExplainer:
    """Exact path-dependent SHAP values of a LightGBM booster (raw score scale)."""

    def __init__(self, booster: Any, method: str = "fast", n_threads: int = 1,
                 table_depth: int = DEFAULT_TABLE_DEPTH,
                 table_bytes: int = DEFAULT_TABLE_BYTES) -> None:
        self.booster = booster
        self.requested_method = check_method(method)
        self.n_threads = max(1, int(n_threads))
        self.feature_names: list[str] = list(booster.feature_name())
        self.fallback_reason: str | None = None
        self.flat: FlatEnsemble | None = None
        self.method: str = method
        if method == "fast":
            try:
                self.flat = flatten_booster(booster)
            except LinearTreeError as exc:
                raise ValueError(str(exc)) from exc
            except UnsupportedModelError as exc:
                self.fallback_reason = str(exc)
                self.method = "lightgbm"
                log.warning("fast TreeSHAP does not support this model (%s); "
                            "using LightGBM pred_contrib", exc)
        if self.flat is not None:
            self._prepare_tables(table_depth, table_bytes)
            self.base_value = float(self.flat.base_value)
        else:
            self.base_value = float(self._lightgbm(np.zeros((1, len(self.feature_names))))[1])

    def _prepare_tables(self, table_depth: int, table_bytes: int) -> None:
        """Choose the deepest table depth whose tables fit ``table_bytes``; build them."""
        flat = self.flat
        depth = flat.leaf_depth.astype(np.int64)
        table_depth = max(0, min(int(table_depth), 30))
        while table_depth > 0:
            use = (depth > 0) & (depth <= table_depth)
            if int(((np.int64(1) << depth[use]) * depth[use]).sum()) * 8 <= table_bytes:
                break
            table_depth -= 1
        use = (depth > 0) & (depth <= table_depth)
        sizes = np.where(use, (np.int64(1) << np.minimum(depth, 62)) * depth, 0)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.table_offset = np.where(use, offsets, -1).astype(np.int64)
        self.tables = np.zeros(max(1, int(sizes.sum())))
        self.table_depth = table_depth
        self.table_leaves = int(use.sum())
        self.W = kern.shapley_weights(max(1, int(depth.max(initial=0))))
        self.tree_range, self.node_slot, self.leaf_slot = tree_slots(flat)
        spans = self.tree_range[:, 1] - self.tree_range[:, 0]
        self.max_nodes = int(spans.max(initial=0))
        kern.build_tables(flat.leaf_depth, flat.leaf_offset, flat.leaf_z, flat.leaf_value,
                          self.table_offset, table_depth, self.W, self.tables)

    @property
    def table_mb(self) -> float:
        return self.tables.nbytes / 2**20 if self.flat is not None else 0.0

    def _lightgbm(self, X: np.ndarray) -> tuple[np.ndarray, float]:
        contrib = self.booster.predict(X, pred_contrib=True, num_threads=self.n_threads)
        contrib = np.asarray(contrib)
        if contrib.ndim != 2 or contrib.shape[1] != len(self.feature_names) + 1:
            raise UnsupportedModelError("pred_contrib returned a multi-output layout")
        base = float(contrib[0, -1]) if len(contrib) else float("nan")
        return np.ascontiguousarray(contrib[:, :-1]), base

    def shap_values(self, data: pd.DataFrame | np.ndarray) -> np.ndarray:
        """(n_rows, n_features) SHAP values; rows sum with ``base_value`` to the raw score."""
        X = model_matrix(self.booster, data)
        if self.flat is None:
            return self._lightgbm(X)[0]
        f = self.flat
        phi = np.zeros((X.shape[0], len(self.feature_names)))
        if X.shape[0] == 0 or f.n_trees == 0:
            return phi
        kern.set_threads(self.n_threads)
        block = int(max(16, min(_BLOCK_ROWS, -(-X.shape[0] // (4 * self.n_threads)))))
        kern.shap_kernel(X, self.tree_range, self.node_slot, self.leaf_slot, f.node_threshold,
                         f.node_kind, f.node_default_left, f.node_missing, f.node_pos,
                         f.node_feature, f.node_cat_offset, f.node_cat_len, f.cat_words,
                         f.leaf_depth, f.leaf_offset, f.leaf_feature, f.leaf_z, f.leaf_value,
                         self.table_offset, self.tables, self.W, self.max_nodes, block, phi)
        return phi

    @cached_property
    def scorer(self) -> QuickScorer | None:
        """The bitvector scorer behind :meth:`raw_score`, built on first use (None: LightGBM
        scores, for models the fast path cannot flatten or with trees over 64 leaves)."""
        if self.flat is None:
            return None
        try:
            return QuickScorer(self.flat)
        except UnsupportedModelError:
            return None

    def raw_score(self, data: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Raw prediction by the bitvector scorer (an algorithm independent of the SHAP
        kernels, equal to LightGBM's to rounding; see :meth:`library_raw_score`)."""
        if self.scorer is None:
            return self.library_raw_score(data)
        X = model_matrix(self.booster, data)
        return self.scorer.raw(X, n_threads=self.n_threads) + self.flat.constant_value

    def library_raw_score(self, data: pd.DataFrame | np.ndarray) -> np.ndarray:
        """LightGBM's own raw prediction (the reference; several times slower)."""
        X = model_matrix(self.booster, data)
        return np.asarray(self.booster.predict(X, raw_score=True, num_threads=self.n_threads))


def additivity_error(phi: np.ndarray, base_value: float, raw: np.ndarray) -> float:
    """max |sum_k phi_k + base - raw| over rows (0 for no rows)."""
    if len(raw) == 0:
        return 0.0
    return float(np.max(np.abs(phi.sum(axis=1) + base_value - raw)))
