"""The 2x2 DiD estimators of Callaway-Sant'Anna cells with their influence functions.

Ports of DRDID's panel estimators (``reg_did_panel``, ``std_ipw_did_panel``, ``drdid_panel``
as csdid and R ``did`` call them), batched over the cells that share one sample: column j of
``DY`` (units x cells) is each unit's outcome change between cell j's period and its base
period, ``D`` marks the cohort, ``X`` includes an intercept column and ``w`` are the unit
weights (normalised to mean 1 here). Each returns (att per cell, :class:`Influence`): one
design matrix, one propensity fit and one OLS solve serve every column; the estimates come
from full-sample sums (one matrix product with ``DY``), and the influence functions are
factors that one compiled pass writes straight into the caller's units x cells matrix.
``ps``: a propensity fit (:func:`propensity`) of the same sample and weights to reuse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

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


@dataclass
class Changes:
    """A batch's outcome changes DY[i, j] = Y[rows[i], ts[j]] - Y[rows[i], bases[j]]
    (``Y``: units x periods), read from ``Y`` where needed and never stored."""

    Y: np.ndarray
    rows: np.ndarray
    ts: np.ndarray
    bases: np.ndarray

    @classmethod
    def of(cls, DY: np.ndarray | Changes) -> Changes:
        """``DY`` itself, or a plain (units x cells) matrix of changes."""
        if isinstance(DY, Changes):
            return DY
        n, m = DY.shape
        return cls(np.column_stack([DY, np.zeros(n)]), np.arange(n), np.arange(m),
                   np.full(m, m))

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.ts)

    def weighted_sums(self, V: np.ndarray) -> np.ndarray:
        """V' DY (q x cells) for per-row weights ``V`` (rows x q): one pass over the rows."""
        return _weighted_sums_kernel(self.Y, self.rows, self.ts, self.bases,
                                     np.ascontiguousarray(V, dtype=np.float64))


@njit(cache=True)
def _weighted_sums_kernel(Y, rows, ts, bases, V):  # pragma: no cover - compiled
    n, q = V.shape
    m = len(ts)
    out = np.zeros((q, m))
    dy = np.empty(m)
    for i in range(n):
        u = rows[i]
        for j in range(m):
            dy[j] = Y[u, ts[j]] - Y[u, bases[j]]
        for a in range(q):
            v = V[i, a]
            if v != 0.0:
                for j in range(m):
                    out[a, j] += v * dy[j]
    return out


@dataclass
class Influence:
    """A batch's influence functions as factors: for unit i and cell j, with the outcome
    change's residual r_ij = DY_ij - X_i coef_j,
    a_t_i (r_ij - e_t_j) - a_c_i (r_ij - e_c_j) - lin_i m2_j - wc_i r_ij (X_i o_j).
    :meth:`write` evaluates it in one pass (no units x cells temporaries)."""

    X: np.ndarray
    coef: np.ndarray  # k x m
    a_t: np.ndarray
    e_t: np.ndarray  # m
    a_c: np.ndarray
    e_c: np.ndarray  # m
    lin: np.ndarray  # n x k
    m2: np.ndarray  # k x m
    wc: np.ndarray
    o: np.ndarray  # k x m

    def write(self, DY: Changes, out: np.ndarray, cols: np.ndarray, scales: np.ndarray) -> None:
        """``out[DY.rows[i], cols[j]] = scales[j] * influence_ij``."""
        f = np.ascontiguousarray
        _influence_kernel(DY.Y, DY.rows, DY.ts, DY.bases, f(self.X), f(self.coef),
                          f(self.a_t), f(self.e_t), f(self.a_c), f(self.e_c), f(self.lin),
                          f(self.m2), f(self.wc), f(self.o), cols.astype(np.int64),
                          f(scales, dtype=np.float64), out)

    def matrix(self, DY: np.ndarray) -> np.ndarray:
        """The (units x cells) influence functions of a plain matrix of changes."""
        n, m = DY.shape
        out = np.empty((n, m))
        self.write(Changes.of(DY), out, np.arange(m), np.ones(m))
        return out


@njit(cache=True)
def _influence_kernel(Y, rows, ts, bases, X, coef, a_t, e_t, a_c, e_c, lin, m2, wc, o, cols,
                      scales, out):  # pragma: no cover - compiled
    n, m = len(rows), len(ts)
    fit, xo, lm = np.empty(m), np.empty(m), np.empty(m)
    for i in range(n):
        fit[:] = 0.0
        xo[:] = 0.0
        lm[:] = 0.0
        for q in range(X.shape[1]):
            x, li = X[i, q], lin[i, q]
            for j in range(m):
                fit[j] += x * coef[q, j]
                xo[j] += x * o[q, j]
                lm[j] += li * m2[q, j]
        at, ac, wci, u = a_t[i], a_c[i], wc[i], rows[i]
        for j in range(m):
            r = Y[u, ts[j]] - Y[u, bases[j]] - fit[j]
            out[u, cols[j]] = (at * (r - e_t[j]) - ac * (r - e_c[j]) - lm[j]
                               - wci * r * xo[j]) * scales[j]


class _Stats:
    """Full-sample sums of one batch, one pass over ``DY``: the control OLS (coefficients
    ``coef``, ``X (X'WcX/n)^-1`` as ``xinv_rows``), and X' diag(v) DY for the weights
    ``v`` in ``weights`` (keyed by name)."""

    def __init__(self, DY: Changes, X, wc, weights: dict[str, np.ndarray]):
        n, k = X.shape
        blocks = [wc[:, None] * X] + [v[:, None] * X for v in weights.values()]
        sums = DY.weighted_sums(np.column_stack(blocks))  # (k (1 + len(weights))) x m
        gram = X.T @ (wc[:, None] * X)
        self.coef = np.linalg.solve(gram, sums[:k])
        self.inv = np.linalg.inv(gram / n)
        self.xdy = {name: sums[k * (i + 1):k * (i + 2)] for i, name in enumerate(weights)}
        self.xw = {name: X.T @ v for name, v in weights.items()}
        self.gram = {name: X.T @ (v[:, None] * X) for name, v in weights.items()}

    def wresid(self, name: str) -> np.ndarray:
        """X' diag(v) (DY - X coef) for the weights ``name`` (k x m); row 0 is v'resid."""
        return self.xdy[name] - self.gram[name] @ self.coef


def reg_cell(DY: np.ndarray | Changes, D: np.ndarray, X: np.ndarray, w: np.ndarray, ps=None):
    """Outcome regression DiD (Heckman, Ichimura, Todd)."""
    DY = Changes.of(DY)
    w = w / w.mean()
    n, k = X.shape
    wc, w_t = w * (D == 0), w * D
    st = _Stats(DY, X, wc, {"t": w_t})
    m_t = w_t.mean()
    eta_t = st.xdy["t"][0] / n / m_t  # X[:, 0] is the intercept
    eta_c = st.xw["t"] @ st.coef / n / m_t
    ols_dir = st.inv @ st.xw["t"] / n
    zero_m, zero_km = np.zeros(DY.shape[1]), np.zeros((k, DY.shape[1]))
    return eta_t - eta_c, Influence(
        X=X, coef=st.coef, a_t=w_t / m_t, e_t=eta_t - eta_c, a_c=np.zeros(n), e_c=zero_m,
        lin=np.zeros((n, k)), m2=zero_km, wc=wc, o=np.repeat(ols_dir[:, None] / m_t,
                                                              DY.shape[1], axis=1))


def ipw_cell(DY: np.ndarray | Changes, D: np.ndarray, X: np.ndarray, w: np.ndarray, ps=None):
    """Normalised (Hajek) inverse probability weighting DiD (Abadie)."""
    DY = Changes.of(DY)
    w = w / w.mean()
    n, k = X.shape
    ps, keep, lin_ps = ps if ps is not None else propensity(D, X, w)
    w_t = keep * w * D
    w_c = keep * w * ps * (1 - D) / (1 - ps)
    st = _Stats(DY, X, w * (D == 0), {"t": w_t, "c": w_c})
    m_t, m_c = w_t.mean(), w_c.mean()
    eta_t = st.xdy["t"][0] / n / m_t
    eta_c = st.xdy["c"][0] / n / m_c
    m2 = (st.xdy["c"] - st.xw["c"][:, None] * eta_c) / n / m_c  # X' w_c (DY - eta_c) / n
    zero_km = np.zeros((k, DY.shape[1]))
    return eta_t - eta_c, Influence(
        X=X, coef=zero_km, a_t=w_t / m_t, e_t=eta_t, a_c=w_c / m_c, e_c=eta_c, lin=lin_ps,
        m2=m2, wc=np.zeros(n), o=zero_km)


def dr_cell(DY: np.ndarray | Changes, D: np.ndarray, X: np.ndarray, w: np.ndarray, ps=None):
    """Doubly robust DiD (Sant'Anna and Zhao, locally efficient panel estimator)."""
    DY = Changes.of(DY)
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
    return eta_t - eta_c, Influence(
        X=X, coef=st.coef, a_t=w_t / m_t, e_t=eta_t, a_c=w_c / m_c, e_c=eta_c, lin=lin_ps,
        m2=m2, wc=wc, o=np.repeat(ols_dir[:, None], DY.shape[1], axis=1))


CELL_ESTIMATORS = {"dr": dr_cell, "ipw": ipw_cell, "reg": reg_cell}
USES_PROPENSITY = ("dr", "ipw")
