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

from e2i_pipelines.analytics.causal.estimators import _lgb_params, _ols_predict, crossfit_folds
from e2i_pipelines.analytics.causal.settings import EstimatorSettings
from e2i_pipelines.analytics.panel.data import PanelData
from e2i_pipelines.analytics.panel.result import PanelResult
from e2i_pipelines.analytics.panel.settings import DOSE_BASES, PanelSettings
from e2i_pipelines.core.errors import DataValidationError

BASES = DOSE_BASES


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
                  clusters: np.ndarray | None = None,
                  confidence_level: float = 0.95) -> DoseResult:
    """DML AME of the dose ``d`` on ``y`` adjusted for ``X``, and the curve on ``grid``
    (default: 20 points from the 5th to the 95th dose percentile). With ``clusters`` (e.g.
    the panel's units) the folds keep each cluster whole and the SEs are cluster-robust."""
    settings = settings or EstimatorSettings()
    y, d = np.asarray(y, dtype=np.float64), np.asarray(d, dtype=np.float64)
    X = np.zeros((y.size, 0)) if X is None else np.asarray(X, dtype=np.float64)
    _validate(y, d, X, basis, knots, settings.folds, clusters)
    n, q = y.size, st.norm.ppf(0.5 + confidence_level / 2)
    fold = _folds(n, clusters, settings)
    B = Basis(d, basis, knots)
    Bd = B(d)
    hat = _crossfit(X, np.column_stack([y, d, Bd]), fold, settings.folds, settings)
    y_t, d_t, B_t = y - hat[:, 0], d - hat[:, 1], Bd - hat[:, 2:]
    theta = float(d_t @ y_t / (d_t @ d_t))
    psi = (y_t - theta * d_t) * d_t / np.mean(d_t ** 2)
    se = float(_se(psi[:, None], clusters)[0])
    grid = (np.quantile(d, np.linspace(0.05, 0.95, 20)) if grid is None
            else np.asarray(grid, dtype=np.float64))
    curve, infl = _curve(y, Bd, B_t, y_t, B(grid))
    c_se = _se(infl, clusters)
    return DoseResult(theta, se, theta - q * se, theta + q * se, grid, curve,
                      curve - q * c_se, curve + q * c_se,
                      details={"basis": basis, "knots": knots if basis != "linear" else 0,
                               "folds": settings.folds, "nuisance": settings.nuisance,
                               "n": n, "se_type": "influence function (cross-fitted)"
                               + (", cluster-robust" if clusters is not None else ""),
                               "estimand": "partially linear DML (variance-weighted AME)"})


def _curve(y: np.ndarray, Bd: np.ndarray, B_t: np.ndarray, y_t: np.ndarray,
           B_grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mu(grid) = mean(y) + (B(grid) - mean B)'beta and its influence function per row and
    grid point (beta's sandwich plus the two sample means)."""
    n = y.size
    J = B_t.T @ B_t / n
    beta = np.linalg.lstsq(J, B_t.T @ y_t / n, rcond=None)[0]
    psi_beta = np.linalg.lstsq(J, (B_t * (y_t - B_t @ beta)[:, None]).T, rcond=None)[0].T
    B_bar = Bd.mean(axis=0)
    curve = y.mean() + (B_grid - B_bar) @ beta
    base = (y - y.mean()) - (Bd - B_bar) @ beta  # (n,) means' part, the same at every dose
    return curve, base[:, None] + psi_beta @ (B_grid - B_bar).T  # (n, grid)


def _folds(n: int, clusters: np.ndarray | None, settings: EstimatorSettings) -> np.ndarray:
    """Cross-fitting fold per row; whole clusters per fold when ``clusters`` is given."""
    if clusters is None:
        return crossfit_folds(np.zeros(n, dtype=bool), settings.folds, settings.seed)
    _, code = np.unique(clusters, return_inverse=True)
    return crossfit_folds(np.zeros(code.max() + 1, dtype=bool), settings.folds,
                          settings.seed)[code]


def _se(infl: np.ndarray, clusters: np.ndarray | None) -> np.ndarray:
    """SE of a mean of influence functions (columns): iid, or summed within clusters with
    the G / (G - 1) small-sample factor."""
    n = infl.shape[0]
    if clusters is None:
        return np.sqrt(np.mean(infl ** 2, axis=0) / n)
    _, code = np.unique(clusters, return_inverse=True)
    g = code.max() + 1
    sums = np.zeros((g, infl.shape[1]))
    np.add.at(sums, code, infl)
    return np.sqrt(g / (g - 1) * np.square(sums).sum(axis=0)) / n


def _validate(y: np.ndarray, d: np.ndarray, X: np.ndarray, basis: str, knots: int,
              folds: int, clusters: np.ndarray | None = None) -> None:
    if basis not in BASES:
        raise DataValidationError(f"dose_response: basis {basis!r} is not one of {list(BASES)}")
    if not 1 <= knots <= 20:
        raise DataValidationError(f"dose_response: knots must be 1..20, got {knots}")
    if y.shape != d.shape or X.shape[0] != y.size:
        raise DataValidationError("dose_response: outcome, dose and covariates differ in length")
    if not (np.isfinite(y).all() and np.isfinite(d).all() and np.isfinite(X).all()):
        raise DataValidationError("dose_response: outcome, dose or covariates have missing values")
    if np.unique(d).size < max(3, knots + 2):
        raise DataValidationError("dose_response: the dose takes too few distinct values for a "
                         "continuous treatment (use treatment_type: binary)")
    if y.size < 10 * folds:
        raise DataValidationError(f"dose_response: {y.size} rows are too few for {folds}-fold "
                         "cross-fitting")
    if clusters is not None and (len(clusters) != y.size
                                 or np.unique(clusters).size < 2 * folds):
        raise DataValidationError(f"dose_response: clusters need one value per row and at least "
                         f"{2 * folds} distinct clusters for {folds}-fold cross-fitting")


def dose_design(panel: PanelData, settings: PanelSettings) -> np.ndarray:
    """The nuisances' inputs (covariates and the period) of a continuous panel, after the
    dose checks (options, distinct doses, rows and clusters per fold), before any fit."""
    if panel.treatment_type != "continuous":
        raise DataValidationError("config key 'method': dose_response needs "
                                  "treatment_type continuous")
    cols = [panel.time.astype(np.float64)[:, None]]
    if panel.covariates is not None:
        cols.insert(0, panel.covariates)
    X = np.hstack(cols)
    _validate(panel.y, panel.d, X, settings.dose_basis, settings.dose_knots, settings.folds,
              panel.cluster)
    return X


def dose_response_panel(panel: PanelData, settings: PanelSettings) -> PanelResult:
    """``method: dose_response`` on a validated panel (``treatment_type: continuous``):
    every unit x period row is an observation; the nuisances see the covariates and the
    period; folds and SEs are by the spec's ``cluster`` (default: unit)."""
    X = dose_design(panel, settings)
    est = EstimatorSettings(confidence_level=settings.confidence_level, seed=settings.seed,
                            folds=settings.folds)
    r = dose_response(panel.y, panel.d, X, settings=est,
                      basis=settings.dose_basis, knots=settings.dose_knots,
                      clusters=panel.cluster, confidence_level=settings.confidence_level)
    curve = [{"dose": float(g), "estimate": float(c), "ci_low": float(lo),
              "ci_high": float(hi)}
             for g, c, lo, hi in zip(r.grid, r.curve, r.curve_low, r.curve_high,
                                     strict=True)]
    warnings = ["dose_response ignores spec key 'weights'"] if panel.weights is not None \
        else []
    return PanelResult(estimate=r.estimate, se=r.se, ci=(r.ci_low, r.ci_high),
                       method="dose_response", n_units=panel.n_units,
                       n_periods=panel.n_periods, confidence_level=settings.confidence_level,
                       extra={"dose_response_curve": curve, **r.details}, warnings=warnings)
