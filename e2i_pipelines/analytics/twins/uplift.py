"""Individual uplift of a LightGBM outcome model: f(x, treated) - f(x, untreated).

Trees that never split on the treatment give the same leaf for both arms, so the difference
only needs the trees that do. ``TreeUplift`` scores just those with the bitvector scorer
(:mod:`tree_scorer`), the treatment pinned to 1 and 0: one pass per row gives both arms.
``booster_uplift`` is the reference: two ``booster.predict`` calls.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from e2i_pipelines.analytics.explain.model import flatten_booster, tree_slots
from e2i_pipelines.analytics.explain.tree_scorer import QuickScorer
from e2i_pipelines.analytics.explain.treeshap import model_matrix


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


class TreeUplift:
    """Exact uplift from only the trees that split on the treatment (bitvector scorer)."""

    def __init__(self, booster: Any, treatment: str, n_threads: int = 1) -> None:
        names = booster.feature_name()
        if treatment not in names:
            raise ValueError(f"treatment {treatment!r} is not a model feature; features: {names}")
        self.booster = booster
        self.treatment = treatment
        self.flat = flatten_booster(booster)
        self.t_col = names.index(treatment)
        feature = self.flat.node_feature
        self.roots = np.asarray([root for root, (n0, n1, _, _) in
                                 zip(self.flat.tree_root, tree_slots(self.flat)[0], strict=True)
                                 if (feature[n0:n1] == self.t_col).any()], dtype=np.int32)
        self.scorer = QuickScorer(self.flat, self.roots, pinned_feature=self.t_col)
        self.n_threads = n_threads

    @property
    def trees_used(self) -> int:
        return len(self.roots)

    @property
    def trees_total(self) -> int:
        return int(self.booster.num_trees())

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The model input ``frame`` as the float matrix the scorer reads (column-major)."""
        return model_matrix(self.booster, frame, order="F")

    def uplift_matrix(self, X: np.ndarray) -> np.ndarray:
        """f(x, 1) - f(x, 0) per row of ``matrix(frame)``."""
        return self.scorer.difference(X, 1.0, 0.0, n_threads=self.n_threads)

    def uplift(self, frame: pd.DataFrame) -> np.ndarray:
        """f(x, 1) - f(x, 0) per row of the model input ``frame``."""
        return self.uplift_matrix(self.matrix(frame))
