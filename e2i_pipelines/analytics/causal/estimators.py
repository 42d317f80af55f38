"""Effect estimators beside DoWhy's linear regression: difference in means, propensity-score
weighting, cross-fitted AIPW, and double machine learning (DoubleML's partially linear model).

Every estimator returns a :class:`FittedEffect`: the estimate of its target (``ate``, ``att``
or ``atc``), a normal-theory CI, the balancing weights and propensities the diagnostics use,
and :class:`EffectScores` -- the estimate written as ``sum(a1)/sum(b1) - sum(a0)/sum(b0)``
with its nuisance models held fixed. The scores give, without refitting any model, the
effect on any subset of rows (CATE per segment; the data-subset and bootstrap refuters) and
the outcome net of its covariate prediction (the placebo refuter).

* ``difference_in_means``: mean(y | T=1) - mean(y | T=0); HC2 standard error
  (sqrt(s1^2/n1 + s0^2/n0), equal to OLS ``y ~ T`` with ``cov_type="HC2"``). For a
  randomised design every target equals the ATE.
* ``propensity_score_weighting``: logistic propensity (IRLS), the target's weights
  (stabilised by default), optional trimming of rows with e outside [trim, 1 - trim] (the
  target population is then the trimmed one), Hajek (within-arm normalised) means. The SE is
  the M-estimation sandwich that accounts for the estimated propensity (Lunceford & Davidian
  2004).
* ``aipw``: augmented IPW (doubly robust) with K-fold cross-fitted nuisances (LightGBM or
  linear: an outcome model per arm and a propensity model), propensities clipped to
  [clip, 1 - clip]; the SE from the efficient influence function.
* ``dml``: double ML of the partially linear model (DoubleMLPLR's partialling-out score,
  the same K folds, LightGBM or linear nuisances; DoubleML is the reference in tests). It
  estimates the constant effect of the partially linear model, so only ``target: ate`` is
  accepted.

LightGBM nuisances train on covariates binned once per frame (:mod:`nuisance`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtri

from e2i_pipelines.analytics.causal.nuisance import Task, TreeNuisance, lgb_params
from e2i_pipelines.analytics.causal.settings import EstimatorSettings
from e2i_pipelines.analytics.causal.weights import (
    LogisticFit,
    effective_sample_size,
    fit_logistic,
    intercept_dot,
    intercept_tdot,
    logistic_propensity,
    target_weights,
    with_intercept,
)

Log = Callable[[str], None]
SCORE_METHODS = ("difference_in_means", "propensity_score_weighting", "aipw", "dml")
ATE_ONLY = {"dml"}


@dataclass(frozen=True)
class EffectData:
    """What an estimator sees: treatment, outcome, numeric design, LightGBM frame, target."""

    t: np.ndarray  # bool
    y: np.ndarray  # float64
    X: np.ndarray  # float64 (n, p): adjustment set + effect modifiers, categoricals one-hot
    names: list[str]  # design column names
    tree_frame: pd.DataFrame  # same covariates, categoricals as pandas categories (LightGBM)
    target: str = "ate"


@dataclass(frozen=True)
class EffectScores:
    """The estimate as ``sum(a1)/sum(b1) - sum(a0)/sum(b0)`` with nuisances held fixed."""

    a1: np.ndarray
    b1: np.ndarray
    a0: np.ndarray
    b0: np.ndarray
    residual: np.ndarray  # y - m(x): outcome net of its covariate prediction

    def effect(self, rows: np.ndarray | None = None) -> float:
        """The estimate over ``rows`` (indices, repeats allowed, or a boolean mask)."""
        if rows is None:
            return float(self.a1.sum() / self.b1.sum() - self.a0.sum() / self.b0.sum())
        return float(self.a1[rows].sum() / self.b1[rows].sum()
                     - self.a0[rows].sum() / self.b0[rows].sum())

    def effect_and_se(self, mask: np.ndarray | None = None) -> tuple[float, float]:
        """(estimate, delta-method SE) over the rows of ``mask`` (all rows when None)."""
        parts = [getattr(self, f) if mask is None else getattr(self, f)[mask]
                 for f in ("a1", "b1", "a0", "b0")]
        a1, b1, a0, b0 = parts
        B1, B0 = b1.sum(), b0.sum()
        th1, th0 = a1.sum() / B1, a0.sum() / B0
        psi = (a1 - th1 * b1) / B1 - (a0 - th0 * b0) / B0
        return float(th1 - th0), float(np.sqrt(np.square(psi).sum()))


@dataclass
class FittedEffect:
    """A fitted estimator: estimate, CI, and what diagnostics and refuters reuse."""

    method: str
    target: str
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    scores: EffectScores | None  # None for linear regression (own refuter engine)
    propensity: np.ndarray | None = None  # cross-fitted where the estimator cross-fits
    weights: np.ndarray | None = None  # the target's balancing weights (diagnostics)
    details: dict[str, Any] = field(default_factory=dict)
    effect_on: Callable[[np.ndarray], tuple[float, float]] | None = None
    """(effect, SE) over a boolean row mask (CATE per segment); set for every estimator."""

    def __post_init__(self) -> None:
        if self.effect_on is None and self.scores is not None:
            self.effect_on = self.scores.effect_and_se


def normal_ci(estimate: float, se: float, level: float) -> tuple[float, float]:
    q = ndtri(0.5 + level / 2)  # normal quantile
    return estimate - q * se, estimate + q * se


def _fitted(method: str, data: EffectData, estimate: float, se: float,
            settings: EstimatorSettings, scores: EffectScores, **kw: Any) -> FittedEffect:
    low, high = normal_ci(estimate, se, settings.confidence_level)
    return FittedEffect(method=method, target=data.target, estimate=estimate, se=se,
                        ci_low=low, ci_high=high, scores=scores, **kw)


DIM_BLOCK_ROWS = 8_192


def difference_in_means(data: EffectData, settings: EstimatorSettings,
                        log: Log | None = None) -> FittedEffect:
    """Mean outcome difference with the HC2 (Neyman) standard error.

    Arm means and variances come from the score arrays (no per-arm copies of ``y``): the
    variances are sums of squares around each row's own arm mean, so still two-pass."""
    t, y = data.t, data.y
    tf = t.astype(np.float64)
    a1 = tf * y
    a0 = y - a1
    n1 = int(np.count_nonzero(t))
    n0 = y.size - n1
    mu1, mu0 = a1.sum() / n1, a0.sum() / n0
    ss1 = ss0 = np.float64(0.0)  # NumPy scalars: a one-row arm gives a NaN SE, as var does
    for start in range(0, y.size, DIM_BLOCK_ROWS):  # small temporaries, reused and cached
        rows = slice(start, start + DIM_BLOCK_ROWS)
        r = y[rows] - np.where(t[rows], mu1, mu0)
        r *= r
        arm1 = r @ tf[rows]
        ss1 += arm1
        ss0 += r.sum() - arm1
    with np.errstate(divide="ignore", invalid="ignore"):
        se = float(np.sqrt(ss1 / (n1 - 1) / n1 + ss0 / (n0 - 1) / n0))
    b0 = 1 - tf
    scores = EffectScores(a1=a1, b1=tf, a0=a0, b0=b0, residual=y - y.mean())
    return _fitted("difference_in_means", data, float(mu1 - mu0), se, settings, scores,
                   details={"n_treated": n1, "n_control": n0, "se_type": "HC2"})


def _ipw_sandwich_se(X: np.ndarray, t: np.ndarray, y: np.ndarray, fit: LogisticFit,
                     keep: np.ndarray | None, target: str, mu1: float, mu0: float) -> float:
    """SE of the Hajek IPW contrast by M-estimation, with the logistic propensity estimated.

    Estimating equations: x (t - e) for the propensity (x = [1, X]), w1 t (y - mu1) and
    w0 (1-t) (y - mu0) for the arm means (``keep`` zeroes trimmed rows). The influence
    function of mu1 - mu0 is the arm terms minus their derivative in beta times beta's
    influence; the propensity's bread is the logistic fit's Hessian.
    """
    n, e = len(y), fit.e
    tf = t.astype(np.float64)
    w = target_weights(e, t, target, stabilized=False)
    if keep is not None:
        w *= keep
    w1 = w * tf
    w0 = w - w1
    # d w1 / d beta = g1 x, d w0 / d beta = g0 x  (see weights' table)
    g1 = -(1 - e) / e * (w1 > 0) if target != "att" else np.zeros(n)
    g0 = e / (1 - e) * (w0 > 0) if target != "atc" else np.zeros(n)
    A11, A00 = w1.mean(), w0.mean()
    u = np.empty((n, 2), order="F")  # both arms in one pass over X each way
    np.multiply(tf * (y - mu1), g1, out=u[:, 0])
    np.multiply((1 - tf) * (y - mu0), g0, out=u[:, 1])
    A_b = -intercept_tdot(X, u) / n  # (k, 2)
    v = np.linalg.solve(fit.hessian / n, A_b)
    xv = intercept_dot(X, v)  # (n, 2)
    resid_t = tf - e
    phi = ((w1 * (y - mu1) - xv[:, 0] * resid_t) / A11
           - (w0 * (y - mu0) - xv[:, 1] * resid_t) / A00)
    return float(np.sqrt(np.square(phi).mean() / n))


def propensity_score_weighting(data: EffectData, settings: EstimatorSettings,
                               log: Log | None = None) -> FittedEffect:
    """Hajek IPW with a logistic propensity, stabilised weights and optional trimming."""
    say = log or (lambda _m: None)
    t, y = data.t, data.y
    say(f"propensity_score_weighting: logistic propensity on {data.X.shape[1]} design "
        f"columns x {len(y):,} rows")
    logit = fit_logistic(data.X, t)
    e = logit.e
    keep, n_trimmed = None, 0  # no trim: no mask (each n-row temporary costs page faults)
    kept1 = int(np.count_nonzero(t))
    kept0 = len(t) - kept1
    if settings.trim > 0:
        keep = ((e >= settings.trim) & (e <= 1 - settings.trim)).astype(np.float64)
        n_trimmed = int((keep == 0).sum())
        kept1 = keep[t].sum()
        kept0 = keep.sum() - kept1
    if kept1 < 2 or kept0 < 2:
        raise ValueError(f"trim {settings.trim} leaves fewer than 2 rows in an arm")
    w = target_weights(e, t, data.target, settings.stabilized)
    if keep is not None:
        w *= keep
    tf = t.astype(np.float64)
    b1 = w * tf
    b0 = w - b1  # = w * (1 - t) exactly, t being 0/1
    scores = EffectScores(a1=b1 * y, b1=b1, a0=b0 * y, b0=b0, residual=y - y.mean())
    mu1 = float(scores.a1.sum() / scores.b1.sum())
    mu0 = float(scores.a0.sum() / scores.b0.sum())
    estimate = mu1 - mu0
    se = _ipw_sandwich_se(data.X, t, y, logit, keep, data.target, mu1, mu0)
    details = {"n_trimmed": n_trimmed, "trim": settings.trim, "stabilized": settings.stabilized,
               "ess_treated": effective_sample_size(w[t]),
               "ess_control": effective_sample_size(w[~t]),
               "max_weight": float(w.max()), "se_type": "M-estimation sandwich"}
    return _fitted("propensity_score_weighting", data, estimate, se, settings, scores,
                   propensity=e, weights=w, details=details)


def crossfit_folds(t: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold id per row, stratified by treatment (each arm split evenly), seeded."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(t), dtype=np.int64)
    for arm in (False, True):
        idx = np.flatnonzero(t == arm)
        fold[rng.permutation(idx)] = np.arange(idx.size) % folds
    return fold


def _lgb_params(settings: EstimatorSettings) -> dict[str, Any]:
    return {"n_estimators": settings.nuisance_trees, "learning_rate": 0.1, "num_leaves": 31,
            "min_child_samples": 50, "n_jobs": settings.n_jobs, "random_state": settings.seed,
            "verbose": -1}


def _ols_predict(X_fit: np.ndarray, y_fit: np.ndarray, X_new: np.ndarray) -> np.ndarray:
    Xi = with_intercept(X_fit)
    beta = np.linalg.lstsq(Xi.T @ Xi, Xi.T @ y_fit, rcond=None)[0]
    return with_intercept(X_new) @ beta


def _tree_nuisance(data: EffectData, settings: EstimatorSettings) -> TreeNuisance:
    """LightGBM nuisances on ``data``'s covariates, binned once (cached per frame)."""
    return TreeNuisance(data.tree_frame, lgb_params(settings.nuisance_trees, settings.n_jobs,
                                                    settings.seed))


def _crossfit_linear(data: EffectData, fold: np.ndarray, folds: int, fit_fold: Callable,
                     outputs: int, say: Log, what: str) -> list[np.ndarray]:
    """Per-fold linear nuisances: ``fit_fold(train, test)`` returns ``outputs`` arrays."""
    out = [np.empty(len(data.y)) for _ in range(outputs)]
    for k in range(folds):
        test, train = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        say(f"{what}: fold {k + 1}/{folds} (linear) on {train.size:,} rows")
        for arr, part in zip(out, fit_fold(train, test), strict=True):
            arr[test] = part
    return out


def _crossfit_trees(data: EffectData, fold: np.ndarray, settings: EstimatorSettings,
                    models: Callable[[np.ndarray], list[tuple[np.ndarray, np.ndarray, str]]],
                    say: Log, what: str) -> list[np.ndarray]:
    """Cross-fitted LightGBM nuisances: ``models(train)`` gives each nuisance's (rows, label,
    objective) on a fold's training rows; every fold's models go to the pool as one batch."""
    trees = _tree_nuisance(data, settings)
    tasks, tests = [], []
    for k in range(settings.folds):
        test, train = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        tests.append(test)
        tasks += [Task(rows, label, objective, test) for rows, label, objective in models(train)]
    per_fold = len(tasks) // settings.folds
    say(f"{what}: {settings.folds} folds x {per_fold} LightGBM models ({settings.n_jobs} at a "
        f"time) on {len(data.y):,} rows")
    fitted = trees.run(tasks)
    out = [np.empty(len(data.y)) for _ in range(per_fold)]
    for k, test in enumerate(tests):
        for j in range(per_fold):
            out[j][test] = fitted[k * per_fold + j]
    return out


def _aipw_nuisances(data: EffectData, fold: np.ndarray, settings: EstimatorSettings,
                    say: Log) -> list[np.ndarray]:
    """Cross-fitted (e, mu1, mu0): the propensity and an outcome model per arm."""
    t, y = data.t, data.y
    if settings.nuisance == "lightgbm":
        def models(train: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, str]]:
            tr1, tr0 = train[t[train]], train[~t[train]]
            return [(train, t[train], "binary"), (tr1, y[tr1], "regression"),
                    (tr0, y[tr0], "regression")]
        return _crossfit_trees(data, fold, settings, models, say, "aipw")

    def linear(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, ...]:
        tr1, tr0 = train[t[train]], train[~t[train]]
        _, beta = logistic_propensity(data.X[train], t[train])
        e_test = 1 / (1 + np.exp(-(with_intercept(data.X[test]) @ beta)))
        return (e_test, _ols_predict(data.X[tr1], y[tr1], data.X[test]),
                _ols_predict(data.X[tr0], y[tr0], data.X[test]))
    return _crossfit_linear(data, fold, settings.folds, linear, 3, say, "aipw")


def _plr_nuisances(data: EffectData, fold: np.ndarray, settings: EstimatorSettings,
                   say: Log) -> list[np.ndarray]:
    """Cross-fitted (l, m): E[y | x] and E[T | x]."""
    t, y = data.t, data.y
    if settings.nuisance == "lightgbm":
        def models(train: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, str]]:
            return [(train, y[train], "regression"), (train, t[train], "binary")]
        return _crossfit_trees(data, fold, settings, models, say, "dml")

    def linear(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, ...]:
        _, beta = logistic_propensity(data.X[train], t[train])
        m_test = 1 / (1 + np.exp(-(with_intercept(data.X[test]) @ beta)))
        return _ols_predict(data.X[train], y[train], data.X[test]), m_test
    return _crossfit_linear(data, fold, settings.folds, linear, 2, say, "dml")


def aipw_scores(t: np.ndarray, y: np.ndarray, e: np.ndarray, mu1: np.ndarray,
                mu0: np.ndarray, target: str) -> EffectScores:
    """Doubly robust scores of ``target`` from (clipped) nuisance predictions."""
    tf = t.astype(np.float64)
    ones, zeros = np.ones_like(y), np.zeros_like(y)
    residual = y - (e * mu1 + (1 - e) * mu0)
    if target == "ate":
        psi = mu1 - mu0 + tf * (y - mu1) / e - (1 - tf) * (y - mu0) / (1 - e)
        return EffectScores(psi, ones, zeros, ones, residual)
    if target == "att":
        a = tf * (y - mu0) - (1 - tf) * e / (1 - e) * (y - mu0)
        return EffectScores(a, tf, zeros, ones, residual)
    a = (1 - tf) * (mu1 - y) + tf * (1 - e) / e * (y - mu1)
    return EffectScores(a, 1 - tf, zeros, ones, residual)


def aipw(data: EffectData, settings: EstimatorSettings, log: Log | None = None) -> FittedEffect:
    """Cross-fitted augmented IPW (doubly robust) for the target."""
    say = log or (lambda _m: None)
    n = len(data.y)
    fold = crossfit_folds(data.t, settings.folds, settings.seed)
    e, mu1, mu0 = _aipw_nuisances(data, fold, settings, say)
    clip = settings.propensity_clip
    n_clipped = int(((e < clip) | (e > 1 - clip)).sum())
    e_used = np.clip(e, clip, 1 - clip)
    keep = np.ones(n, dtype=bool)
    if settings.trim > 0:
        keep = (e >= settings.trim) & (e <= 1 - settings.trim)
    scores = aipw_scores(data.t, data.y, e_used, mu1, mu0, data.target)
    if not keep.all():
        scores = EffectScores(*(getattr(scores, f) * keep for f in ("a1", "b1", "a0", "b0")),
                              residual=scores.residual)
    estimate, se = scores.effect_and_se()
    w = target_weights(e_used, data.t, data.target, settings.stabilized) * keep
    details = {"folds": settings.folds, "nuisance": settings.nuisance,
               "propensity_clip": clip, "n_clipped": n_clipped,
               "n_trimmed": int((~keep).sum()), "se_type": "influence function"}
    return _fitted("aipw", data, estimate, se, settings, scores, propensity=e, weights=w,
                   details=details)


def plr_fit(t: np.ndarray, y: np.ndarray, l_hat: np.ndarray, m_hat: np.ndarray
            ) -> tuple[float, float, EffectScores]:
    """Partialling-out estimate of the partially linear model, its SE and scores.

    theta = sum((y - l)(T - m)) / sum((T - m)^2); psi_a = -(T - m)^2, psi_b = (y - l)(T - m)
    (DoubleML's ``DoubleMLPLR(score="partialling out")``), SE from the influence function.
    """
    v = t.astype(np.float64) - m_hat
    u = y - l_hat
    psi_a, psi_b = -np.square(v), u * v
    n = len(y)
    scores = EffectScores(psi_b, -psi_a, np.zeros(n), np.ones(n), residual=u)
    estimate, se = scores.effect_and_se()
    return estimate, se, scores


def dml(data: EffectData, settings: EstimatorSettings, log: Log | None = None) -> FittedEffect:
    """Double ML of the partially linear model (partialling out, DoubleMLPLR's score) on the
    same cross-fitting folds, nuisances binned once."""
    say = log or (lambda _m: None)
    if data.target != "ate":
        raise ValueError("dml estimates the constant effect of the partially linear model; "
                         "use aipw for target att/atc")
    t, y = data.t, data.y
    fold = crossfit_folds(t, settings.folds, settings.seed)
    l_hat, m_hat = _plr_nuisances(data, fold, settings, say)
    estimate, se, scores = plr_fit(t, y, l_hat, m_hat)
    e = np.clip(m_hat, settings.propensity_clip, 1 - settings.propensity_clip)
    w = target_weights(e, t, "ate", settings.stabilized)
    return _fitted("dml", data, estimate, se, settings, scores, propensity=m_hat, weights=w,
                   details={"folds": settings.folds, "nuisance": settings.nuisance,
                            "score": "partialling out (DoubleMLPLR)",
                            "se_type": "influence function"})


ESTIMATORS: dict[str, Callable[[EffectData, EstimatorSettings, Log | None], FittedEffect]] = {
    "difference_in_means": difference_in_means,
    "propensity_score_weighting": propensity_score_weighting,
    "aipw": aipw,
    "dml": dml,
}


def fit_scored(method: str, data: EffectData, settings: EstimatorSettings,
               log: Log | None = None) -> FittedEffect:
    """Fit one of :data:`SCORE_METHODS` on ``data``."""
    return ESTIMATORS[method](data, settings, log)
