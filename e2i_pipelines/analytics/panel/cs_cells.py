"""The 2x2 DiD estimators of Callaway-Sant'Anna cells with their influence functions.

Ports of DRDID's panel estimators (``reg_did_panel``, ``std_ipw_did_panel``, ``drdid_panel``
as csdid and R ``did`` call them), batched over the cells that share one sample: column j of
``DY`` (units x cells) is each unit's outcome change between cell j's period and its base
period, ``D`` marks the cohort, ``X`` includes an intercept column and ``w`` are the unit
weights (normalised to mean 1 here). Each returns (att per cell, influence functions units x
cells): one design matrix, one propensity fit and one OLS solve serve every column; the
estimates come from full-sample sums (one pass over ``DY``), the influence functions are
written in row blocks (``emit(rows, values)`` when given, else returned). ``ps``: a
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


ROW_CHUNK = 1 << 16
"""Rows per block of the influence functions (a block of units x cells stays in cache)."""


def _write_rows(n: int, block, emit) -> np.ndarray | None:
    """Call ``block(rows)`` for consecutive row slices and hand each result to
    ``emit(rows, values)``; without ``emit``, the (n x m) matrix of all rows."""
    out = None
    for start in range(0, n, ROW_CHUNK):
        rows = slice(start, min(start + ROW_CHUNK, n))
        values = block(rows)
        if emit is not None:
            emit(rows, values)
            continue
        if out is None:
            out = np.empty((n, values.shape[1]))
        out[rows] = values
    return out


class _Stats:
    """Full-sample sums of one batch, one pass over ``DY``: the control OLS (coefficients
    ``coef``, ``X (X'WcX/n)^-1`` as ``xinv_rows``), and X' diag(v) DY for the weights
    ``v`` in ``weights`` (keyed by name)."""

    def __init__(self, DY, X, wc, weights: dict[str, np.ndarray]):
        n, k = X.shape
        blocks = [wc[:, None] * X] + [v[:, None] * X for v in weights.values()]
        sums = np.column_stack(blocks).T @ DY  # one pass: (k (1 + len(weights))) x m
        gram = X.T @ (wc[:, None] * X)
        self.coef = np.linalg.solve(gram, sums[:k])
        self.inv = np.linalg.inv(gram / n)
        self.xdy = {name: sums[k * (i + 1):k * (i + 2)] for i, name in enumerate(weights)}
        self.xw = {name: X.T @ v for name, v in weights.items()}
        self.gram = {name: X.T @ (v[:, None] * X) for name, v in weights.items()}

    def wresid(self, name: str) -> np.ndarray:
        """X' diag(v) (DY - X coef) for the weights ``name`` (k x m); row 0 is v'resid."""
        return self.xdy[name] - self.gram[name] @ self.coef


def reg_cell(DY: np.ndarray, D: np.ndarray, X: np.ndarray, w: np.ndarray, ps=None, emit=None):
    """Outcome regression DiD (Heckman, Ichimura, Todd)."""
    w = w / w.mean()
    n = len(D)
    wc, w_t = w * (D == 0), w * D
    st = _Stats(DY, X, wc, {"t": w_t})
    m_t = w_t.mean()
    eta_t = st.xdy["t"][0] / n / m_t  # X[:, 0] is the intercept
    eta_c = st.xw["t"] @ st.coef / n / m_t
    ols_dir = st.inv @ st.xw["t"] / n

    def block(r):
        fitted = X[r] @ st.coef
        return (w_t[r, None] * (DY[r] - eta_t - fitted + eta_c)
                - (wc[r, None] * (DY[r] - fitted)) * (X[r] @ ols_dir)[:, None]) / m_t

    return eta_t - eta_c, _write_rows(n, block, emit)


def ipw_cell(DY: np.ndarray, D: np.ndarray, X: np.ndarray, w: np.ndarray, ps=None, emit=None):
    """Normalised (Hajek) inverse probability weighting DiD (Abadie)."""
    w = w / w.mean()
    n = len(D)
    ps, keep, lin_ps = ps if ps is not None else propensity(D, X, w)
    w_t = keep * w * D
    w_c = keep * w * ps * (1 - D) / (1 - ps)
    st = _Stats(DY, X, w * (D == 0), {"t": w_t, "c": w_c})
    m_t, m_c = w_t.mean(), w_c.mean()
    eta_t = st.xdy["t"][0] / n / m_t
    eta_c = st.xdy["c"][0] / n / m_c
    m2 = (st.xdy["c"] - st.xw["c"][:, None] * eta_c) / n / m_c  # X' w_c (DY - eta_c) / n

    def block(r):
        return (w_t[r, None] * (DY[r] - eta_t) / m_t
                - w_c[r, None] * (DY[r] - eta_c) / m_c - lin_ps[r] @ m2)

    return eta_t - eta_c, _write_rows(n, block, emit)


def dr_cell(DY: np.ndarray, D: np.ndarray, X: np.ndarray, w: np.ndarray, ps=None, emit=None):
    """Doubly robust DiD (Sant'Anna and Zhao, locally efficient panel estimator)."""
    w = w / w.mean()
    n = len(D)
    ps, keep, lin_ps = ps if ps is not None else propensity(D, X, w)
    wc = w * (D == 0)
    w_t = keep * w * D
    w_c = keep * w * ps * (1 - D) / (1 - ps)
    st = _Stats(DY, X, wc, {"t": w_t, "c": w_c})
    m_t, m_c = w_t.mean(), w_c.mean()
    eta_t = st.wresid("t")[0] / n / m_t
    eta_c = st.wresid("c")[0] / n / m_c
    m2 = (st.wresid("c") - st.xw["c"][:, None] * eta_c) / n / m_c  # X' dev_c / n / m_c
    # the OLS linear representation enters through X'w_t/n (treated) and X'w_c/n (controls)
    ols_dir = st.inv @ (st.xw["t"] / n / m_t - st.xw["c"] / n / m_c)

    def block(r):
        resid = DY[r] - X[r] @ st.coef
        return (w_t[r, None] * (resid - eta_t) / m_t - w_c[r, None] * (resid - eta_c) / m_c
                - lin_ps[r] @ m2 - (wc[r, None] * resid) * (X[r] @ ols_dir)[:, None])

    return eta_t - eta_c, _write_rows(n, block, emit)


CELL_ESTIMATORS = {"dr": dr_cell, "ipw": ipw_cell, "reg": reg_cell}
USES_PROPENSITY = ("dr", "ipw")
