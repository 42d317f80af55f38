"""Dose-response for a continuous treatment (``treatment_type: continuous``).

* Average marginal effect: double ML partially linear model (Robinson partialling out,
  K-fold cross-fitted nuisances ``E[y|x]`` and ``E[d|x]``; LightGBM or linear, the causal
  estimators' helpers), ``theta = sum(d~ y~) / sum(d~^2)`` with its influence-function SE.
  Under a non-linear response theta is a variance-weighted average of the marginal effects.
* Dose-response curve ``mu(d) = E[Y(d)]``: the same partialling out with a basis ``B(d)`` in
  place of ``d`` (``y = B(d)'beta + f(x) + e``): a cubic B-spline with knots at quantiles of
  the dose, quantile bins, or ``linear`` (one column ``d``: the linear-only model). Then
  ``mu(d) = mean(y) + (B(d) - mean B)'beta``, with pointwise CIs from its influence function
  (the beta sandwich and the two means).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.stats as st
from scipy.interpolate import BSpline

from e2i_pipelines.analytics.causal.estimators import (
    EstimatorSettings,
    _lgb_params,
    _ols_predict,
    crossfit_folds,
)

BASES = ("spline", "bins", "linear")


@dataclass
class DoseResult:
    """AME (partially linear DML) and the dose-response curve on a grid of doses."""

    estimate: float
    se: float
    ci_low: float
    ci_high: float
    grid: np.ndarray
    curve: np.ndarray
    curve_low: np.ndarray
    curve_high: np.ndarray
    details: dict = field(default_factory=dict)


class Basis:
    """B(d): cubic B-spline (knots at dose quantiles), quantile-bin indicators, or ``d``.
    One column is dropped from the spline and the bins (they sum to 1, like the intercept)."""

    def __init__(self, d: np.ndarray, kind: str, knots: int) -> None:
        self.kind, self.lo, self.hi = kind, float(d.min()), float(d.max())
        inner = np.quantile(d, np.linspace(0, 1, knots + 2)[1:-1])
        if kind == "spline":
            self.t = np.r_[[self.lo] * 4, inner, [self.hi] * 4]
        elif kind == "bins":
            self.edges = inner

    def __call__(self, d: np.ndarray) -> np.ndarray:
        d = np.clip(np.asarray(d, dtype=np.float64), self.lo, self.hi)
        if self.kind == "linear":
            return d[:, None]
        if self.kind == "bins":
            idx = np.searchsorted(self.edges, d, side="right")
            return (idx[:, None] == np.arange(1, self.edges.size + 1)[None, :]).astype(float)
        return BSpline.design_matrix(d, self.t, 3).toarray()[:, 1:]


def _crossfit(X: np.ndarray, targets: np.ndarray, fold: np.ndarray, folds: int,
              settings: EstimatorSettings) -> np.ndarray:
    """Out-of-fold predictions of each column of ``targets`` from ``X``."""
    out = np.empty_like(targets)
    for k in range(folds):
        test, train = fold == k, fold != k
        if X.shape[1] == 0:
            out[test] = targets[train].mean(axis=0)
        elif settings.nuisance == "linear":
            out[test] = _ols_predict(X[train], targets[train], X[test])
        else:
            import lightgbm as lgb

            for j in range(targets.shape[1]):
                model = lgb.LGBMRegressor(**_lgb_params(settings))
                out[test, j] = model.fit(X[train], targets[train, j]).predict(X[test])
    return out


def dose_response(y: np.ndarray, d: np.ndarray, X: np.ndarray | None = None, *,
                  settings: EstimatorSettings | None = None, basis: str = "spline",
                  knots: int = 4, grid: np.ndarray | None = None,
                  confidence_level: float = 0.95) -> DoseResult:
    """DML AME of the dose ``d`` on ``y`` adjusted for ``X``, and the curve on ``grid``
    (default: 20 points from the 5th to the 95th dose percentile)."""
    settings = settings or EstimatorSettings()
    y, d = np.asarray(y, dtype=np.float64), np.asarray(d, dtype=np.float64)
    X = np.zeros((y.size, 0)) if X is None else np.asarray(X, dtype=np.float64)
    _validate(y, d, X, basis, knots, settings.folds)
    n, q = y.size, st.norm.ppf(0.5 + confidence_level / 2)
    fold = crossfit_folds(np.zeros(n, dtype=bool), settings.folds, settings.seed)
    B = Basis(d, basis, knots)
    Bd = B(d)
    hat = _crossfit(X, np.column_stack([y, d, Bd]), fold, settings.folds, settings)
    y_t, d_t, B_t = y - hat[:, 0], d - hat[:, 1], Bd - hat[:, 2:]
    theta = float(d_t @ y_t / (d_t @ d_t))
    psi = (y_t - theta * d_t) * d_t / np.mean(d_t ** 2)
    se = float(np.sqrt(np.mean(psi ** 2) / n))
    grid = (np.quantile(d, np.linspace(0.05, 0.95, 20)) if grid is None
            else np.asarray(grid, dtype=np.float64))
    curve, c_se = _curve(y, Bd, B_t, y_t, B(grid))
    return DoseResult(theta, se, theta - q * se, theta + q * se, grid, curve,
                      curve - q * c_se, curve + q * c_se,
                      details={"basis": basis, "knots": knots if basis != "linear" else 0,
                               "folds": settings.folds, "nuisance": settings.nuisance,
                               "n": n, "se_type": "influence function (cross-fitted)",
                               "estimand": "partially linear DML (variance-weighted AME)"})


def _curve(y: np.ndarray, Bd: np.ndarray, B_t: np.ndarray, y_t: np.ndarray,
           B_grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mu(grid) = mean(y) + (B(grid) - mean B)'beta and its pointwise SE (influence
    function of beta's sandwich plus the two sample means)."""
    n = y.size
    J = B_t.T @ B_t / n
    beta = np.linalg.lstsq(J, B_t.T @ y_t / n, rcond=None)[0]
    psi_beta = np.linalg.lstsq(J, (B_t * (y_t - B_t @ beta)[:, None]).T, rcond=None)[0].T
    B_bar = Bd.mean(axis=0)
    curve = y.mean() + (B_grid - B_bar) @ beta
    base = (y - y.mean()) - (Bd - B_bar) @ beta  # (n,) means' part, the same at every dose
    infl = base[:, None] + psi_beta @ (B_grid - B_bar).T  # (n, grid)
    return curve, np.sqrt(np.mean(infl ** 2, axis=0) / n)


def _validate(y: np.ndarray, d: np.ndarray, X: np.ndarray, basis: str, knots: int,
              folds: int) -> None:
    if basis not in BASES:
        raise ValueError(f"dose_response: basis {basis!r} is not one of {list(BASES)}")
    if not 1 <= knots <= 20:
        raise ValueError(f"dose_response: knots must be 1..20, got {knots}")
    if y.shape != d.shape or X.shape[0] != y.size:
        raise ValueError("dose_response: outcome, dose and covariates differ in length")
    if not (np.isfinite(y).all() and np.isfinite(d).all() and np.isfinite(X).all()):
        raise ValueError("dose_response: outcome, dose or covariates have missing values")
    if np.unique(d).size < max(3, knots + 2):
        raise ValueError("dose_response: the dose takes too few distinct values for a "
                         "continuous treatment (use treatment_type: binary)")
    if y.size < 10 * folds:
        raise ValueError(f"dose_response: {y.size} rows are too few for {folds}-fold "
                         "cross-fitting")
