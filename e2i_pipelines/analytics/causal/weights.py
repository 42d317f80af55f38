"""Propensity scores (logistic regression by IRLS) and the balancing weights of each target.

The logistic fit is Newton's method on the full design with an intercept: each iteration is
one weighted Gram ``X' diag(e(1-e)) X`` accumulated over row blocks, so 1M x 30 costs a few
passes of ~0.1 s. It is the unpenalised maximum-likelihood fit (statsmodels' ``Logit``), not
scikit-learn's L2-penalised default.

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

import numpy as np

BLOCK_ROWS = 131_072


class PropensityFitError(ValueError):
    """The logistic propensity model did not converge (e.g. complete separation)."""


def with_intercept(X: np.ndarray) -> np.ndarray:
    """``[1, X]`` as float64 (X may have zero columns)."""
    out = np.empty((X.shape[0], X.shape[1] + 1))
    out[:, 0] = 1.0
    out[:, 1:] = X
    return out


def weighted_gram(X: np.ndarray, w: np.ndarray, block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """``X' diag(w) X`` over row blocks (no n x p temporary beyond one block)."""
    G = np.zeros((X.shape[1], X.shape[1]))
    for start in range(0, X.shape[0], block_rows):
        xb = X[start:start + block_rows]
        G += xb.T @ (xb * w[start:start + block_rows, None])
    return G


def logistic_propensity(X: np.ndarray, t: np.ndarray, *, max_iter: int = 50,
                        tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """(propensity e, coefficients) of ``t ~ logit(1 + X)`` by IRLS; raises on separation."""
    Xi = with_intercept(X)
    tf = t.astype(np.float64)
    beta = np.zeros(Xi.shape[1])
    beta[0] = np.log(tf.mean() / (1 - tf.mean()))
    for _ in range(max_iter):
        eta = Xi @ beta
        e = _expit(eta)
        H = weighted_gram(Xi, e * (1 - e))
        step = np.linalg.solve(H + 1e-12 * np.eye(len(beta)), Xi.T @ (tf - e))
        beta = beta + step
        if np.max(np.abs(step)) < tol * (1 + np.max(np.abs(beta))):
            break
    else:
        raise PropensityFitError(
            f"logistic propensity model did not converge in {max_iter} iterations "
            "(complete or quasi-complete separation: some covariate values predict the "
            "treatment perfectly)")
    if np.max(np.abs(beta)) > 30:
        raise PropensityFitError(
            "logistic propensity model diverges (coefficients > 30): covariates separate "
            "treated from control rows; there is no overlap to weight on")
    return _expit(Xi @ beta), beta


def _expit(eta: np.ndarray) -> np.ndarray:
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
