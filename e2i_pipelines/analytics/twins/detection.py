"""Detection: can a classifier tell twins from real rows? Cross-validated ROC AUC.

Real and twin rows (equal numbers) are labelled 0/1; a LightGBM classifier (categoricals
native) is trained on k-1 folds and scores the held-out fold, for each of k stratified folds.
The AUC of the out-of-fold scores is 0.5 when the twins are indistinguishable, 1.0 when every
twin is recognised. SDMetrics' LogisticDetection reports 1 - AUC style scores from the same
idea; we keep the AUC itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def model_features(frame: pd.DataFrame, columns: list[str], discrete: list[str]) -> pd.DataFrame:
    """The columns as LightGBM input: discrete columns as pandas categoricals."""
    out = frame[columns].copy()
    for c in discrete:
        if not isinstance(out[c].dtype, pd.CategoricalDtype):
            out[c] = out[c].astype("category")
    return out


def _aligned(real: pd.DataFrame, twins: pd.DataFrame, discrete: list[str]) -> pd.DataFrame:
    """Real rows then twin rows, discrete columns on a shared category list."""
    both = pd.concat([real, twins], ignore_index=True)
    for c in discrete:
        values = pd.concat([real[c].astype(object), twins[c].astype(object)], ignore_index=True)
        both[c] = pd.Categorical(values, categories=pd.unique(values))
    return both


def detection_auc(real: pd.DataFrame, twins: pd.DataFrame, columns: list[str],
                  discrete: list[str], *, folds: int = 3, rounds: int = 60, seed: int = 0,
                  n_threads: int = 1) -> dict[str, Any]:
    """Out-of-fold ROC AUC of real-vs-twin classification, and the AUC of each fold."""
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    n = min(len(real), len(twins))
    x = model_features(_aligned(real[columns].iloc[:n], twins[columns].iloc[:n], discrete),
                       columns, discrete)
    y = np.r_[np.zeros(n), np.ones(n)]
    rng = np.random.default_rng(seed)
    fold = np.empty(2 * n, dtype=np.int64)
    for label in (0, 1):  # stratified: each fold holds the same share of real and twin rows
        idx = np.flatnonzero(y == label)
        fold[rng.permutation(idx)] = np.arange(n) % folds
    score = np.empty(2 * n)
    params = {"objective": "binary", "num_leaves": 31, "learning_rate": 0.1,
              "min_data_in_leaf": 50, "verbose": -1, "num_threads": n_threads, "seed": seed}
    per_fold = []
    for k in range(folds):
        train, test = fold != k, fold == k
        booster = lgb.train(params, lgb.Dataset(x[train], y[train]), rounds)
        score[test] = booster.predict(x[test])
        per_fold.append(float(roc_auc_score(y[test], score[test])))
    return {"auc": float(roc_auc_score(y, score)), "fold_auc": per_fold, "rows_per_side": n,
            "folds": folds, "scores": score, "labels": y}
