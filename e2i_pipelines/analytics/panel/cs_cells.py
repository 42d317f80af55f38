"""The 2x2 DiD estimators of Callaway-Sant'Anna cells with their influence functions.

Ports of DRDID's panel estimators (``reg_did_panel``, ``std_ipw_did_panel``, ``drdid_panel``
as csdid and R ``did`` call them), batched over the cells that share one sample: column j of
``DY`` (units x cells) is each unit's outcome change between cell j's period and its base
period, ``D`` marks the cohort, ``X`` includes an intercept column and ``w`` are the unit
weights (normalised to mean 1 here). Each returns (att per cell, influence functions units x
cells): one design matrix, one propensity fit and one OLS solve serve every column. ``ps``: a
propensity fit (:func:`propensity`) of the same sample and weights to reuse.
"""

from __future__ import annotations

import numpy as np

PS_CAP = 1 - 1e-6
TRIM_LEVEL = 0.995
"""Controls with a propensity score at or above this are dropped (DRDID's trimming)."""


def logit(D: np.ndarray, X: np.ndarray, w: np.ndarray, max_iter: int = 100) -> np.ndarray:
    """Weighted logistic regression by Newton steps; the fitted probabilities."""
    beta = np.zeros(X.shape[1])
    p_bar = np.clip(np.sum(w * D) / np.sum(w), 1e-12, 1 - 1e-12)
    beta[0] = np.log(p_bar / (1 - p_bar))  # X[:, 0] is the intercept
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(X @ beta)))
        grad = X.T @ (w * (D - p))
        hess = X.T @ ((w * p * (1 - p))[:, None] * X)
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.max(np.abs(step)) < 1e-12:
            break
    return 1.0 / (1.0 + np.exp(-(X @ beta)))


def propensity(D: np.ndarray, X: np.ndarray, w: np.ndarray):
    """(capped scores, trimming mask, linear representation) of the propensity logit;
    ``w`` already normalised to mean 1."""
    ps = np.minimum(logit(D, X, w), PS_CAP)
    keep = np.where(D == 1, True, ps < TRIM_LEVEL).astype(np.float64)
    info = X.T @ ((w * ps * (1 - ps))[:, None] * X)
    lin_rep = ((w * (D - ps))[:, None] * X) @ (np.linalg.inv(info) * len(D))
    return ps, keep, lin_rep


def _outcome_regression(DY, D, X, w):
    """OLS of each column of ``DY`` on ``X`` among controls: (fitted n x m, X (X'WcX/n)^-1
    (n x k), control weights). Column j's linear representation is
    ``(wc * (DY[:, j] - fitted[:, j]))[:, None] * xinv``."""
    wc = w * (D == 0)
    xtx = X.T @ (wc[:, None] * X)
    coef = np.linalg.solve(xtx, X.T @ (wc[:, None] * DY))
    return X @ coef, X @ np.linalg.inv(xtx / len(D)), wc


def reg_cell(DY: np.ndarray, D: np.ndarray, X: np.ndarray, w: np.ndarray, ps=None):
    """Outcome regression DiD (Heckman, Ichimura, Todd)."""
    w = w / w.mean()
    n = len(D)
    fitted, xinv, wc = _outcome_regression(DY, D, X, w)
    w_t = w * D
    m_t = w_t.mean()
    eta_t = (w_t @ DY) / n / m_t
    eta_c = (w_t @ fitted) / n / m_t
    lin = (wc[:, None] * (DY - fitted)) * (xinv @ (X.T @ w_t / n))[:, None]
    inf = (w_t[:, None] * (DY - eta_t - fitted + eta_c) - lin) / m_t
    return eta_t - eta_c, inf


def ipw_cell(DY: np.ndarray, D: np.ndarray, X: np.ndarray, w: np.ndarray, ps=None):
    """Normalised (Hajek) inverse probability weighting DiD (Abadie)."""
    w = w / w.mean()
    n = len(D)
    ps, keep, lin_ps = ps if ps is not None else propensity(D, X, w)
    w_t = keep * w * D
    w_c = keep * w * ps * (1 - D) / (1 - ps)
    m_t, m_c = w_t.mean(), w_c.mean()
    eta_t = (w_t @ DY) / n / m_t
    eta_c = (w_c @ DY) / n / m_c
    dev_c = w_c[:, None] * (DY - eta_c)
    inf_c = (dev_c + lin_ps @ (X.T @ dev_c / n)) / m_c
    return eta_t - eta_c, w_t[:, None] * (DY - eta_t) / m_t - inf_c


def dr_cell(DY: np.ndarray, D: np.ndarray, X: np.ndarray, w: np.ndarray, ps=None):
    """Doubly robust DiD (Sant'Anna and Zhao, locally efficient panel estimator)."""
    w = w / w.mean()
    n = len(D)
    ps, keep, lin_ps = ps if ps is not None else propensity(D, X, w)
    fitted, xinv, wc = _outcome_regression(DY, D, X, w)
    resid = DY - fitted
    w_t = keep * w * D
    w_c = keep * w * ps * (1 - D) / (1 - ps)
    m_t, m_c = w_t.mean(), w_c.mean()
    eta_t = (w_t @ resid) / n / m_t
    eta_c = (w_c @ resid) / n / m_c
    dev_c = w_c[:, None] * (resid - eta_c)
    # the OLS linear representation enters through X'w_t/n (treated) and X'w_c/n (controls)
    ols_dir = xinv @ (X.T @ w_t / n / m_t - X.T @ w_c / n / m_c)
    inf = (w_t[:, None] * (resid - eta_t) / m_t - dev_c / m_c
           - lin_ps @ (X.T @ dev_c / n) / m_c - (wc[:, None] * resid) * ols_dir[:, None])
    return eta_t - eta_c, inf


CELL_ESTIMATORS = {"dr": dr_cell, "ipw": ipw_cell, "reg": reg_cell}
USES_PROPENSITY = ("dr", "ipw")
