"""Machine-learning utility (TSTR vs TRTR) and causal fidelity of twins, with one outcome model.

The twins are covariates + treatment; their outcomes are simulated by an outcome model, as
``twin_interventions`` does. Here that model ``g`` is a LightGBM regression trained on a random
half of the real rows (*train*); the other half (*test*) is never used for fitting.

* TRTR: R² of ``g`` on the real test rows.
* TSTR: a second model, same settings, trained on the twins labelled with ``g``'s simulated
  outcomes, R² on the same real test rows. Twins that cover the real covariate distribution
  give TSTR close to TRTR; twins off the real support (or with broken dependence between the
  covariates) give a model that predicts real outcomes worse.
* Causal fidelity: the twins' simulated ATE, mean of ``g(x, 1) - g(x, 0)`` over twins (what
  ``twin_interventions`` computes), vs the same g-computation over the real test rows (so a
  difference comes from the twins, not from ``g``). The data's uncertainty is the standard
  error of its doubly robust (AIPW) estimate, with a propensity model ``e`` also trained on the
  train half (influence function: outcome noise included); the AIPW estimate is reported too.
  The same for the ATT (treated rows / treated twins), which also tests that the twins keep
  who gets treated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from e2i_pipelines.analytics.twins.detection import model_features

PARAMS = {"objective": "regression", "num_leaves": 31, "learning_rate": 0.1,
          "min_data_in_leaf": 20, "verbose": -1}


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def _mean_se(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {"mean": float("nan"), "se": float("nan")}
    return {"mean": float(x.mean()), "se": float(x.std(ddof=1) / np.sqrt(len(x)))
            if len(x) > 1 else float("nan")}


def _with_arm(booster: Any, x: pd.DataFrame, treatment: str, arm: int) -> np.ndarray:
    """Predictions with every row's treatment set to ``arm``."""
    out = x.copy()
    dtype = x[treatment].dtype
    if isinstance(dtype, pd.CategoricalDtype):
        out[treatment] = pd.Categorical(np.full(len(x), arm), categories=dtype.categories)
    else:
        out[treatment] = np.full(len(x), arm, dtype=dtype)
    return booster.predict(out)


def _uplift(booster: Any, x: pd.DataFrame, treatment: str) -> np.ndarray:
    return _with_arm(booster, x, treatment, 1) - _with_arm(booster, x, treatment, 0)


def _twin_effects(d: np.ndarray, treated: np.ndarray) -> dict[str, dict[str, float]]:
    return {"ate": _mean_se(d), "att": _mean_se(d[treated])}


def aipw_effects(y: np.ndarray, t: np.ndarray, g1: np.ndarray, g0: np.ndarray,
                 e: np.ndarray) -> dict[str, dict[str, float]]:
    """Doubly robust ATE and ATT with influence-function standard errors."""
    t = t.astype(np.float64)
    e = np.clip(e, 0.01, 0.99)
    psi = g1 - g0 + t * (y - g1) / e - (1 - t) * (y - g0) / (1 - e)
    p = t.mean()
    att_terms = t * (y - g0) - (1 - t) * e / (1 - e) * (y - g0)
    att = att_terms.mean() / p
    n = len(y)
    return {"ate": {"mean": float(psi.mean()), "se": float(psi.std(ddof=1) / np.sqrt(n))},
            "att": {"mean": float(att),
                    "se": float((att_terms - t * att).std(ddof=1) / (p * np.sqrt(n)))}}


def utility_and_effects(real: pd.DataFrame, twins: pd.DataFrame, columns: list[str],
                        discrete: list[str], treatment: str, outcome: str, *,
                        rounds: int = 60, seed: int = 0, n_threads: int = 1) -> dict[str, Any]:
    """TRTR and TSTR R² on the real test half; ATE/ATT of real test rows and of twins."""
    import lightgbm as lgb

    if outcome not in real.columns:
        raise ValueError(f"the real rows have no outcome column {outcome!r}")
    rng = np.random.default_rng(seed)
    is_train = rng.permutation(len(real)) < len(real) // 2
    twins = twins.iloc[: int(is_train.sum())]  # TSTR learns from as many rows as TRTR
    # one category list per discrete column for real and twins (LightGBM maps by category)
    both = model_features(pd.concat([real[columns], twins[columns]], ignore_index=True),
                          columns, discrete)
    x_real, x_twin = both.iloc[: len(real)], both.iloc[len(real):].reset_index(drop=True)
    y = real[outcome].to_numpy(np.float64)
    params = {**PARAMS, "num_threads": n_threads, "seed": seed}
    g = lgb.train(params, lgb.Dataset(x_real[is_train], y[is_train]), rounds)
    test = ~is_train
    trtr = r2(y[test], g.predict(x_real[test]))
    labels = g.predict(x_twin)
    h = lgb.train(params, lgb.Dataset(x_twin, labels), rounds)
    tstr = r2(y[test], h.predict(x_real[test]))
    t = real[treatment].to_numpy().astype(bool)
    features = [c for c in columns if c != treatment]
    e_model = lgb.train({**params, "objective": "binary"},
                        lgb.Dataset(x_real.loc[is_train, features], t[is_train]), rounds)
    x_test = x_real[test]
    d_real = _uplift(g, x_test, treatment)
    g1 = _with_arm(g, x_test, treatment, 1)
    dr = aipw_effects(y[test], t[test], g1, g1 - d_real, e_model.predict(x_test[features]))
    plug_in = _twin_effects(d_real, t[test])
    data = {k: {"mean": plug_in[k]["mean"], "se": dr[k]["se"], "dr": dr[k]["mean"]}
            for k in ("ate", "att")}
    d_twin = _uplift(g, x_twin, treatment)
    twin_t = twins[treatment].to_numpy().astype(bool)
    return {"trtr_r2": trtr, "tstr_r2": tstr, "train_rows": int(is_train.sum()),
            "test_rows": int(test.sum()), "twin_rows": len(twins),
            "real": data, "twins": _twin_effects(d_twin, twin_t),
            "test_outcome": y[test], "tstr_pred": h.predict(x_real[test]),
            "trtr_pred": g.predict(x_real[test]), "uplift_real": d_real, "uplift_twins": d_twin}
