"""The 2x2 DiD estimators of one Callaway-Sant'Anna cell with their influence functions.

Ports of DRDID's panel estimators (``reg_did_panel``, ``std_ipw_did_panel``, ``drdid_panel``
as csdid and R ``did`` call them): ``dy`` is each unit's outcome change between the cell's
period and its base period, ``D`` marks the cohort, ``X`` includes an intercept column and
``w`` are the unit weights (normalised to mean 1 here). Each returns (att, influence function
per unit of the cell). ``ps``: a propensity fit (:func:`propensity`) of the same sample and
weights to reuse (cells of one cohort share it when covariates do not change over time).
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


def _outcome_regression(dy, D, X, w):
    control = D == 0
    wc = w * control
    xtx = X.T @ (wc[:, None] * X)
    coef = np.linalg.solve(xtx, X.T @ (wc * dy))
    fitted = X @ coef
    lin_rep = (wc * (dy - fitted))[:, None] * X @ np.linalg.inv(xtx / len(D))
    return fitted, lin_rep


def reg_cell(dy: np.ndarray, D: np.ndarray, X: np.ndarray, w: np.ndarray, ps=None):
    """Outcome regression DiD (Heckman, Ichimura, Todd)."""
    w = w / w.mean()
    fitted, lin_rep = _outcome_regression(dy, D, X, w)
    w_t = w * D
    m_t = w_t.mean()
    eta_t = np.mean(w_t * dy) / m_t
    eta_c = np.mean(w_t * fitted) / m_t
    inf_t = (w_t * dy - w_t * eta_t) / m_t
    inf_c = (w_t * fitted - w_t * eta_c + lin_rep @ np.mean(w_t[:, None] * X, axis=0)) / m_t
    return eta_t - eta_c, inf_t - inf_c


def ipw_cell(dy: np.ndarray, D: np.ndarray, X: np.ndarray, w: np.ndarray, ps=None):
    """Normalised (Hajek) inverse probability weighting DiD (Abadie)."""
    w = w / w.mean()
    ps, keep, lin_ps = ps if ps is not None else propensity(D, X, w)
    w_t = keep * w * D
    w_c = keep * w * ps * (1 - D) / (1 - ps)
    eta_t = np.mean(w_t * dy) / w_t.mean()
    eta_c = np.mean(w_c * dy) / w_c.mean()
    inf_t = (w_t * dy - w_t * eta_t) / w_t.mean()
    m2 = np.mean((w_c * (dy - eta_c))[:, None] * X, axis=0)
    inf_c = (w_c * dy - w_c * eta_c + lin_ps @ m2) / w_c.mean()
    return eta_t - eta_c, inf_t - inf_c


def dr_cell(dy: np.ndarray, D: np.ndarray, X: np.ndarray, w: np.ndarray, ps=None):
    """Doubly robust DiD (Sant'Anna and Zhao, locally efficient panel estimator)."""
    w = w / w.mean()
    ps, keep, lin_ps = ps if ps is not None else propensity(D, X, w)
    fitted, lin_ols = _outcome_regression(dy, D, X, w)
    resid = dy - fitted
    w_t = keep * w * D
    w_c = keep * w * ps * (1 - D) / (1 - ps)
    eta_t = np.mean(w_t * resid) / w_t.mean()
    eta_c = np.mean(w_c * resid) / w_c.mean()
    inf_t = (w_t * resid - w_t * eta_t - lin_ols @ np.mean(w_t[:, None] * X, axis=0)) \
        / w_t.mean()
    m2 = np.mean((w_c * (resid - eta_c))[:, None] * X, axis=0)
    m3 = np.mean(w_c[:, None] * X, axis=0)
    inf_c = (w_c * resid - w_c * eta_c + lin_ps @ m2 - lin_ols @ m3) / w_c.mean()
    return eta_t - eta_c, inf_t - inf_c


CELL_ESTIMATORS = {"dr": dr_cell, "ipw": ipw_cell, "reg": reg_cell}
USES_PROPENSITY = ("dr", "ipw")
