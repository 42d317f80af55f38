"""Ordinary least squares of ``y ~ 1 + T + X + T*M`` in closed form, on the arrays as they are.

This is DoWhy's backdoor linear regression (treatment, every adjustment column, treatment x
effect-modifier interactions, an intercept) without building the design ``Z = [1, t, X, t*M]``:
``Z'Z`` and ``Z'y`` are assembled from ``X'X`` (one BLAS syrk over the column-major ``X``),
column sums over all rows and over the treated rows, and, with modifiers, ``X' diag(t) M``. The
normal equations are solved on the column-scaled Gram and refined once with a second pass over
the residuals (which also gives the residual sum of squares). BLAS runs on the calling thread
(NumPy's OpenBLAS only, set through its own thread setter): idle OpenBLAS threads busy-wait
between products, and on the shared 2-core machine that made a 1M-row fit 13x slower (13.9 s
against 1.0 s under load 14). The covariance is the classical ``s^2 (Z'Z)^-1`` (statsmodels'
``nonrobust``), with ``s^2 = RSS / (n - rank)``. A rank-deficient design gets the
pseudo-inverse, as statsmodels' ``pinv`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from e2i_pipelines.core.budget import single_threaded_blas

RANK_TOL = 1e-13
"""Eigenvalues of the scaled Gram below this fraction of the largest count as rank loss."""


@dataclass(frozen=True)
class OLSFit:
    """Coefficients ``[const, T, X..., T*M...]``, their covariance and residual dof."""

    beta: np.ndarray
    cov: np.ndarray
    dof: int

    def contrast(self, c: np.ndarray) -> tuple[float, float]:
        """(c'beta, its standard error)."""
        return float(c @ self.beta), float(np.sqrt(max(c @ self.cov @ c, 0.0)))


def _cross(tf: np.ndarray, X: np.ndarray, m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``Z'v`` for ``Z = [1, t, X, t * X[:, m]]``, without building ``Z``."""
    tv = tf * v
    out = [[v.sum(), tv.sum()], X.T @ v]
    if m.size:
        out.append(X[:, m].T @ tv)
    return np.concatenate(out)


def _gram(tf: np.ndarray, X: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``Z'Z`` for ``Z = [1, t, X, t * X[:, m]]`` (``t`` is 0/1, so ``t^2 = t``)."""
    p, q = X.shape[1], m.size
    k = 2 + p + q
    G = np.empty((k, k))
    n1 = tf.sum()
    S, S1 = X.sum(axis=0), X.T @ tf
    G[0, :2] = G[1, :2] = n1
    G[0, 0] = X.shape[0]
    G[0, 2:2 + p], G[1, 2:2 + p] = S, S1
    G[2:2 + p, 2:2 + p] = X.T @ X  # A'A: BLAS syrk
    if q:
        XM1 = X.T @ (X[:, m] * tf[:, None])  # X' diag(t) M
        G[0, 2 + p:] = G[1, 2 + p:] = S1[m]
        G[2:2 + p, 2 + p:] = XM1
        G[2 + p:, 2 + p:] = XM1[m]
    upper = np.triu_indices(k, 1)
    G[upper[1], upper[0]] = G[upper]
    return G


def _pinv_scaled(G: np.ndarray) -> tuple[np.ndarray, int]:
    """(pseudo-inverse of the symmetric ``G``, its rank), computed on the unit-diagonal
    rescaling of ``G``."""
    d = np.sqrt(np.diag(G))
    d[d == 0] = 1.0
    vals, vecs = np.linalg.eigh(G / np.outer(d, d))
    keep = vals > RANK_TOL * vals.max()
    inv = (vecs[:, keep] / vals[keep]) @ vecs[:, keep].T
    return inv / np.outer(d, d), int(keep.sum())


@single_threaded_blas(numpy_only=True)
def treatment_ols(t: np.ndarray, y: np.ndarray, X: np.ndarray,
                  modifiers: list[int] | np.ndarray = ()) -> OLSFit:
    """OLS of ``y`` on ``[1, t, X, t * X[:, modifiers]]`` (see the module docstring)."""
    n = len(y)
    tf = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m = np.asarray(modifiers, dtype=np.int64)
    G_inv, rank = _pinv_scaled(_gram(tf, X, m))
    beta = G_inv @ _cross(tf, X, m, y)
    p = X.shape[1]
    fitted = X @ beta[2:2 + p] + beta[0]
    slope = beta[1] + (X[:, m] @ beta[2 + p:] if m.size else 0.0)
    r = y - fitted - tf * slope
    zr = _cross(tf, X, m, r)
    rss = float(r @ r)
    delta = G_inv @ zr  # one step of iterative refinement
    beta = beta + delta
    rss = max(rss - float(delta @ zr), 0.0)
    dof = n - rank
    if dof <= 0:
        raise ValueError(f"linear regression needs more rows than its {rank} design columns; "
                         f"got {n}")
    return OLSFit(beta=beta, cov=G_inv * (rss / dof), dof=dof)
