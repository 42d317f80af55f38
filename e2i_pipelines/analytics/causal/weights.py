"""Propensity scores (logistic regression by IRLS) and the balancing weights of each target.

The logistic fit is Newton's method on the design with an implicit intercept (``[1, X]`` is
never built). A Newton step needs the weighted Gram ``[1, X]' diag(e(1-e)) [1, X]`` (row blocks
into one reused buffer); once the steps are small the Hessian is kept and each further step is
a chord step, one gradient pass. Inputs of 100k rows and more start from the fit on every k-th
row (25k rows), whose Hessian, scaled to the rows, serves the full data's chord steps; the
Hessian is computed once more at the optimum. BLAS runs on the calling thread (see :mod:`ols`:
idle OpenBLAS threads spin between the block products). It is the unpenalised
maximum-likelihood fit (statsmodels' ``Logit``), not scikit-learn's L2-penalised default.

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

BLOCK_ROWS = 32_768


class PropensityFitError(ValueError):
    """The logistic propensity model did not converge (e.g. complete separation)."""


def with_intercept(X: np.ndarray) -> np.ndarray:
    """``[1, X]`` as float64 (X may have zero columns)."""
    out = np.empty((X.shape[0], X.shape[1] + 1))
    out[:, 0] = 1.0
    out[:, 1:] = X
    return out


def intercept_dot(X: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``[1, X] @ beta`` without building ``[1, X]`` (``beta`` a vector or columns)."""
    out = X @ beta[1:]
    out += beta[0]
    return out


def intercept_tdot(X: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``[1, X]' u`` without building ``[1, X]`` (``u`` a vector or columns)."""
    return np.concatenate([u.sum(axis=0)[None], X.T @ u])


@dataclass(frozen=True)
class LogisticFit:
    """The maximum-likelihood logistic fit: propensities, coefficients, and the Hessian
    ``[1, X]' diag(e(1-e)) [1, X]`` at (numerically) the optimum."""

    e: np.ndarray
    beta: np.ndarray
    hessian: np.ndarray


WARM_START_ROWS = 25_000
"""Inputs of at least 4x this many rows start from the fit on every k-th row (this many)."""
CHORD_STEP = 1e-3
"""Below this relative step Newton keeps its Hessian (chord steps: one gradient pass each)."""


@single_threaded_blas(numpy_only=True)
def fit_logistic(X: np.ndarray, t: np.ndarray, *, max_iter: int = 50,
                 tol: float = 1e-10) -> LogisticFit:
    """Newton's method for ``t ~ logit(1 + X)``; raises PropensityFitError on separation.

    Converged when the largest step is below ``tol * (1 + max|beta|)``. Once the steps are
    small the Hessian is kept (chord steps: the gradient alone costs a fraction of the
    weighted Gram) and computed once more at the optimum, which is the one returned.
    """
    tf = t.astype(np.float64)
    p = tf.mean()
    beta = np.zeros(X.shape[1] + 1)
    beta[0] = np.log(p / (1 - p))
    H = None
    stride = X.shape[0] // WARM_START_ROWS
    if stride >= 4:  # the fit on every stride-th row is within ~1/sqrt(rows) of the optimum,
        # and its Hessian, scaled to the rows, within about as much of the full one
        with suppress(PropensityFitError):  # the full data may still fit
            sub = tf[::stride]
            beta, _, H = _newton(np.asfortranarray(X[::stride]), sub, beta, max_iter, 1e-6)
            H = H * (X.shape[0] / sub.size)
    beta, e, _ = _newton(X, tf, beta, max_iter, tol, H)
    if np.max(np.abs(beta)) > 30:
        raise PropensityFitError(
            "logistic propensity model diverges (coefficients > 30): covariates separate "
            "treated from control rows; there is no overlap to weight on")
    return LogisticFit(e=e, beta=beta, hessian=_hessian(X, e))


def _hessian(X: np.ndarray, e: np.ndarray) -> np.ndarray:
    """``[1, X]' diag(e(1-e)) [1, X]``, over row blocks into one reused buffer."""
    k = X.shape[1] + 1
    H = np.zeros((k, k))
    buf = np.empty((min(BLOCK_ROWS, X.shape[0]), k), order="F")
    for start in range(0, X.shape[0], BLOCK_ROWS):
        eb = e[start:start + BLOCK_ROWS]
        zb = buf[:eb.size]
        np.sqrt(eb * (1 - eb), out=zb[:, 0])
        np.multiply(X[start:start + BLOCK_ROWS], zb[:, :1], out=zb[:, 1:])
        H += zb.T @ zb  # A'A: NumPy calls BLAS syrk
    return H


def _newton(X: np.ndarray, tf: np.ndarray, beta: np.ndarray, max_iter: int, tol: float,
            H: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coefficients, propensities at them, the last Hessian used); a given ``H`` starts
    with chord steps."""
    k, chord, last = len(beta), H is not None, np.inf
    for _ in range(max_iter):
        e = _expit(intercept_dot(X, beta))
        grad = intercept_tdot(X, tf - e)
        if H is None or not chord:
            H = _hessian(X, e) + 1e-12 * np.eye(k)
        step = np.linalg.solve(H, grad)
        beta = beta + step
        if not np.all(np.isfinite(beta)):
            break
        size = np.max(np.abs(step)) / (1 + np.max(np.abs(beta)))
        if size < tol:
            return beta, _expit(intercept_dot(X, beta)), H
        # keep the Hessian while the steps are small after a Newton step, or shrink >= 10x
        chord = size < 0.1 * last if chord else size < CHORD_STEP
        last = size
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
    """``1 / (1 + exp(-eta))``, computed in ``eta``'s buffer (a temporary of the caller)."""
    with np.errstate(over="ignore"):
        np.negative(eta, out=eta)
        np.exp(eta, out=eta)
        eta += 1.0
        return np.reciprocal(eta, out=eta)


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
    return w if np.isfinite(w.sum()) else np.nan_to_num(w, nan=0.0)


def effective_sample_size(w: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``."""
    return float(w.sum() ** 2 / np.square(w).sum()) if w.any() else 0.0
