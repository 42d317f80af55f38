"""Propensity scores (logistic regression by IRLS) and the balancing weights of each target.

The logistic fit is Newton's method on the design with an implicit intercept (``[1, X]`` is
never built): each iteration is one pass over row blocks computing the gradient and the
weighted Gram ``[1, X]' diag(e(1-e)) [1, X]``, so 1M x 30 costs a few passes of ~0.1 s. Large
inputs start from the fit on every k-th row, which leaves two or three full passes. BLAS runs
on the calling thread (see :mod:`ols`: idle OpenBLAS threads spin between the block products).
It is the
unpenalised maximum-likelihood fit (statsmodels' ``Logit``), not scikit-learn's L2-penalised
default.

Weights by target (e the propensity, p = P(T = 1)):

=======  ==================  ==================
target   treated             control
=======  ==================  ==================
ate      1 / e               1 / (1 - e)
att      1                   e / (1 - e)
atc      (1 - e) / e         1
=======  ==================  ==================

Stabilised weights multiply the ATE weights by p (treated) and 1 - p (controls), so each
arm's weights average about 1 (readable weights, effective sample sizes). Estimators that
normalise the weights within each arm (Hajek) give the same estimate either way.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass

import numpy as np

from e2i_pipelines.core.budget import single_threaded_blas

BLOCK_ROWS = 131_072


class PropensityFitError(ValueError):
    """The logistic propensity model did not converge (e.g. complete separation)."""


def with_intercept(X: np.ndarray) -> np.ndarray:
    """``[1, X]`` as float64 (X may have zero columns)."""
    out = np.empty((X.shape[0], X.shape[1] + 1))
    out[:, 0] = 1.0
    out[:, 1:] = X
    return out


def intercept_dot(X: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``[1, X] @ beta`` without building ``[1, X]``."""
    return X @ beta[1:] + beta[0]


def intercept_tdot(X: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``[1, X]' u`` without building ``[1, X]``."""
    return np.concatenate([[u.sum()], X.T @ u])


def _scaled_block(xb: np.ndarray, sw: np.ndarray) -> np.ndarray:
    """``[sw, xb * sw]' [sw, xb * sw]`` (one block of ``[1, X]' diag(sw^2) [1, X]``)."""
    zb = np.empty((xb.shape[0], xb.shape[1] + 1))
    zb[:, 0] = sw
    np.multiply(xb, sw[:, None], out=zb[:, 1:])
    return zb.T @ zb  # A'A: NumPy calls BLAS syrk


@dataclass(frozen=True)
class LogisticFit:
    """The maximum-likelihood logistic fit: propensities, coefficients, and the Hessian
    ``[1, X]' diag(e(1-e)) [1, X]`` at (numerically) the optimum."""

    e: np.ndarray
    beta: np.ndarray
    hessian: np.ndarray


WARM_START_ROWS = 100_000


@single_threaded_blas()
def fit_logistic(X: np.ndarray, t: np.ndarray, *, max_iter: int = 50,
                 tol: float = 1e-10) -> LogisticFit:
    """Newton's method for ``t ~ logit(1 + X)``; raises PropensityFitError on separation.

    Converged when the largest Newton step is below ``tol * (1 + max|beta|)``; the returned
    Hessian is the one of that last step (at most ``tol`` away from the optimum).
    """
    tf = t.astype(np.float64)
    p = tf.mean()
    beta = np.zeros(X.shape[1] + 1)
    beta[0] = np.log(p / (1 - p))
    stride = X.shape[0] // WARM_START_ROWS
    if stride >= 4:  # the fit on every stride-th row is within ~1/sqrt(rows) of the optimum
        with suppress(PropensityFitError):  # the full data may still fit
            beta = _newton(np.ascontiguousarray(X[::stride]), tf[::stride], beta, max_iter,
                           1e-6)[0]
    beta, H = _newton(X, tf, beta, max_iter, tol)
    if np.max(np.abs(beta)) > 30:
        raise PropensityFitError(
            "logistic propensity model diverges (coefficients > 30): covariates separate "
            "treated from control rows; there is no overlap to weight on")
    return LogisticFit(e=_expit(intercept_dot(X, beta)), beta=beta, hessian=H)


def _newton(X: np.ndarray, tf: np.ndarray, beta: np.ndarray, max_iter: int, tol: float
            ) -> tuple[np.ndarray, np.ndarray]:
    k = len(beta)
    for _ in range(max_iter):
        grad, H = np.zeros(k), np.zeros((k, k))
        for start in range(0, X.shape[0], BLOCK_ROWS):
            xb, tb = X[start:start + BLOCK_ROWS], tf[start:start + BLOCK_ROWS]
            e = _expit(intercept_dot(xb, beta))
            grad += intercept_tdot(xb, tb - e)
            H += _scaled_block(xb, np.sqrt(e * (1 - e)))
        step = np.linalg.solve(H + 1e-12 * np.eye(k), grad)
        beta = beta + step
        if not np.all(np.isfinite(beta)):
            break
        if np.max(np.abs(step)) < tol * (1 + np.max(np.abs(beta))):
            return beta, H
    raise PropensityFitError(
        f"logistic propensity model did not converge in {max_iter} iterations "
        "(complete or quasi-complete separation: some covariate values predict the "
        "treatment perfectly)")


def logistic_propensity(X: np.ndarray, t: np.ndarray, *, max_iter: int = 50,
                        tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """(propensity e, coefficients) of ``t ~ logit(1 + X)``; raises on separation."""
    fit = fit_logistic(X, t, max_iter=max_iter, tol=tol)
    return fit.e, fit.beta


def _expit(eta: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-eta))


def target_weights(e: np.ndarray, t: np.ndarray, target: str,
                   stabilized: bool = True) -> np.ndarray:
    """Balancing weights of ``target`` (see the module table); 0 where ``e`` is NaN."""
    t = t.astype(bool)
    if target == "ate":
        w = np.where(t, 1.0 / e, 1.0 / (1.0 - e))
        if stabilized:
            p = t.mean()
            w = w * np.where(t, p, 1.0 - p)
    elif target == "att":
        w = np.where(t, 1.0, e / (1.0 - e))
    elif target == "atc":
        w = np.where(t, (1.0 - e) / e, 1.0)
    else:
        raise ValueError(f"unknown target {target!r}; expected ate, att or atc")
    return np.nan_to_num(w, nan=0.0)


def effective_sample_size(w: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``."""
    return float(w.sum() ** 2 / np.square(w).sum()) if w.any() else 0.0
