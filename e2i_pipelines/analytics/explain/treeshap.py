"""Exact TreeSHAP for LightGBM boosters: fast numba tables, or LightGBM's own pred_contrib.

``TreeShapExplainer(booster, method="fast")`` gives the same numbers as
``shap.TreeExplainer(booster).shap_values(X)`` (which calls LightGBM's
``predict(pred_contrib=True)``), several times faster; with
``feature_perturbation="interventional"`` and a background set, exact interventional SHAP
(shap's interventional TreeExplainer agrees to its float32 precision), far faster. Boosters
the fast kernels cannot
handle (e.g. paths over 62 distinct features) fall back to LightGBM with the reason in ``fallback_reason``.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd

from e2i_pipelines.analytics.explain import interventional as inter
from e2i_pipelines.analytics.explain import kernels as kern
from e2i_pipelines.analytics.explain.model import (
    FlatEnsemble,
    LinearTreeError,
    UnsupportedModelError,
    flatten_booster,
    tree_slots,
)
from e2i_pipelines.analytics.explain.settings import METHODS, PERTURBATIONS
from e2i_pipelines.analytics.explain.tree_scorer import QuickScorer

Method = Literal["fast", "lightgbm"]
DEFAULT_TABLE_DEPTH = 12  # leaves with more unique path features use the O(d^2) per-row path
DEFAULT_TABLE_BYTES = 512 * 2**20
_BLOCK_ROWS = 1024  # rows per parallel block: a leaf's table is reused across its rows

log = logging.getLogger(__name__)


def check_method(method: str) -> str:
    """Return ``method`` or raise naming the allowed values."""
    if method not in METHODS:
        raise ValueError(f"unknown SHAP method {method!r}; allowed: {list(METHODS)}")
    return method


def check_perturbation(feature_perturbation: str) -> str:
    """Return ``feature_perturbation`` or raise naming the allowed values."""
    if feature_perturbation not in PERTURBATIONS:
        raise ValueError(f"unknown feature_perturbation {feature_perturbation!r}; "
                         f"allowed: {list(PERTURBATIONS)}")
    return feature_perturbation


def model_matrix(booster: Any, frame: pd.DataFrame | np.ndarray, order: str = "C") -> np.ndarray:
    """Float64 matrix exactly as LightGBM sees ``frame``: categoricals as codes, missing NaN.

    ``order="F"`` (column-major) fills each column with one contiguous write; the binned
    scorer reads it column by column too."""
    names = booster.feature_name()
    if isinstance(frame, np.ndarray):
        if frame.ndim != 2 or frame.shape[1] != len(names):
            raise ValueError(f"expected a 2-D array with {len(names)} columns, got {frame.shape}")
        return np.asarray(frame, dtype=np.float64, order=order)
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise ValueError(f"input has no model feature(s) {missing}")
    trained_cats = list(getattr(booster, "pandas_categorical", None) or [])
    out = np.empty((len(frame), len(names)), dtype=np.float64, order=order)
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
    """Exact TreeSHAP values of a LightGBM booster (raw score scale).

    ``feature_perturbation="tree_path_dependent"`` (default) follows the trees' cover
    fractions, like LightGBM's ``pred_contrib``; ``"interventional"`` averages over the rows
    of ``background`` (like ``shap.TreeExplainer(model, data=background,
    feature_perturbation="interventional")``, in float64) and its base value is the mean
    raw score over the background. Models the kernels refuse fall back to LightGBM
    (path-dependent) or shap (interventional), with the reason in ``fallback_reason``.
    """

    def __init__(self, booster: Any, method: str = "fast", n_threads: int = 1,
                 table_depth: int = DEFAULT_TABLE_DEPTH,
                 table_bytes: int = DEFAULT_TABLE_BYTES,
                 feature_perturbation: str = "tree_path_dependent",
                 background: pd.DataFrame | np.ndarray | None = None) -> None:
        self.booster = booster
        self.requested_method = check_method(method)
        self.feature_perturbation = check_perturbation(feature_perturbation)
        self.n_threads = max(1, int(n_threads))
        self.feature_names: list[str] = list(booster.feature_name())
        self.fallback_reason: str | None = None
        self.flat: FlatEnsemble | None = None
        self.method: str = method
        self.background: np.ndarray | None = None
        if self.interventional:
            self.background = self._check_background(background, method)
        if method == "fast":
            try:
                self.flat = flatten_booster(booster)
            except LinearTreeError as exc:
                raise ValueError(str(exc)) from exc
            except UnsupportedModelError as exc:
                self.fallback_reason = str(exc)
                self.method = "shap" if self.interventional else "lightgbm"
                log.warning("fast TreeSHAP does not support this model (%s); using %s",
                            exc, self.method)
        if self.flat is not None:
            self._prepare_tables(table_depth, table_bytes)
        elif self.interventional:
            self.base_value = float(self._shap_explainer.expected_value)
        else:
            self.base_value = float(self._lightgbm(np.zeros((1, len(self.feature_names))))[1])

    @property
    def interventional(self) -> bool:
        return self.feature_perturbation == "interventional"

    def _check_background(self, background: pd.DataFrame | np.ndarray | None,
                          method: str) -> np.ndarray:
        if method != "fast":
            raise ValueError("interventional SHAP needs method 'fast' (LightGBM's "
                             "pred_contrib is path-dependent only)")
        if background is None or len(background) == 0:
            raise ValueError("interventional SHAP needs background rows (got none)")
        return model_matrix(self.booster, background)

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
        empty = np.zeros(0, dtype=np.int64)
        self.bg_offset, self.bg_pattern, self.bg_weight = empty, empty, np.zeros(0)
        if self.interventional:
            self._build_interventional(use)
            return
        kern.build_tables(flat.leaf_depth, flat.leaf_offset, flat.leaf_z, flat.leaf_value,
                          self.table_offset, table_depth, self.W, self.tables)
        self.base_value = float(flat.base_value)

    def _build_interventional(self, use: np.ndarray) -> None:
        """Background pattern counts per leaf -> tables; deep leaves keep their distinct
        patterns and weights; base value = mean raw score over the background."""
        f, Xb = self.flat, self.background
        n_b = len(Xb)
        depth = f.leaf_depth.astype(np.int64)
        sizes = np.where(use, np.int64(1) << np.minimum(depth, 62), 0)
        count_offset = np.where(use, np.concatenate([[0], np.cumsum(sizes)[:-1]]), -1)
        counts = np.zeros(max(1, int(sizes.sum())))
        deep = np.flatnonzero(~use & (depth > 0))
        deep_index = np.full(f.n_leaves, -1, dtype=np.int64)
        deep_index[deep] = np.arange(len(deep))
        deep_hot = np.zeros((len(deep), n_b), dtype=np.int64)
        kern.set_threads(self.n_threads)
        inter.background_patterns(
            Xb, self.tree_range, self.node_slot, self.leaf_slot, f.node_threshold, f.node_kind,
            f.node_default_left, f.node_missing, f.node_pos, f.node_feature, f.node_cat_offset,
            f.node_cat_len, f.cat_words, f.leaf_depth, count_offset.astype(np.int64), counts,
            deep_index, deep_hot, self.max_nodes)
        inter.interventional_tables(counts, count_offset.astype(np.int64), f.leaf_depth,
                                    f.leaf_value, self.table_offset, self.W, float(n_b),
                                    self.tables)
        offset = np.zeros(f.n_leaves + 1, dtype=np.int64)
        patterns, weights = [], []
        for i, leaf in enumerate(deep):
            values, n = np.unique(deep_hot[i], return_counts=True)
            patterns.append(values)
            weights.append(n / n_b)
            offset[leaf + 1] = len(values)
        self.bg_offset = np.cumsum(offset)
        self.bg_pattern = np.concatenate(patterns) if patterns else np.zeros(1, np.int64)
        self.bg_weight = np.concatenate(weights) if weights else np.zeros(1)
        self.base_value = float(np.mean(self.library_raw_score(Xb)))

    @cached_property
    def _shap_explainer(self) -> Any:
        """shap's own interventional explainer (fallback for models the kernels refuse)."""
        import shap

        return shap.TreeExplainer(self.booster, data=self.background,
                                  feature_perturbation="interventional")

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
        if self.flat is None and self.interventional:
            return np.asarray(self._shap_explainer.shap_values(X), dtype=np.float64)
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
                         self.table_offset, self.tables, self.W, self.bg_offset,
                         self.bg_pattern, self.bg_weight, self.max_nodes, block, phi)
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
