"""``did``: 2x2 or two-way fixed effects DiD, y_it = a_i + l_t + b d_it (+ X g) + e.

Unit and time effects are absorbed by alternating (weighted) demeaning, never expanded into
dummies, so memory is a few arrays of the row count; a balanced panel is demeaned on its
(units x periods) reshape (exact in one pass without weights). Inference is CR1 cluster-robust (the
small-sample factor G/(G-1) (N-1)/(N-K), K counting fixed effects not nested in the clusters,
and t(G-1) critical values, as pyfixest's and fixest's CRV1); with fewer clusters than ``wild_cluster_threshold`` the CI is a wild cluster bootstrap-t
(Rademacher or Webb weights). Staggered adoption is warned about with the share of negative
de Chaisemartin-D'Haultfoeuille weights.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from e2i_pipelines.analytics.panel.data import PanelData
from e2i_pipelines.analytics.panel.result import PanelResult
from e2i_pipelines.analytics.panel.settings import PanelSettings

DEMEAN_TOL = 1e-12
DEMEAN_MAX_ITER = 10_000


def demean(x: np.ndarray, unit: np.ndarray, time: np.ndarray,
           w: np.ndarray | None = None, balanced: bool = False) -> np.ndarray:
    """``x`` (rows or rows x k) with unit and time means removed (alternating projections,
    column by column, until the largest change of a column is below :data:`DEMEAN_TOL` times
    its scale). ``balanced``: every unit has every period and rows are sorted by (unit, time);
    the projections then run on a (units x periods) reshape, exact in one pass without
    weights."""
    x = np.asarray(x, dtype=np.float64)
    if balanced and len(unit):
        return _demean_balanced(x, int(unit[-1]) + 1, w)
    order = None
    if np.any(unit[1:] < unit[:-1]):  # unit means below need each unit's rows together
        order = np.argsort(unit, kind="stable")
        x, unit, time = x[order], unit[order], time[order]
        w = None if w is None else w[order]
    starts = np.r_[0, np.flatnonzero(np.diff(unit)) + 1] if len(unit) else np.zeros(0, int)
    counts = np.diff(np.r_[starts, len(unit)])
    cols = [_alternate(np.array(c), starts, counts, time, w)
            for c in (x.T if x.ndim == 2 else [x])]
    out = np.column_stack(cols) if x.ndim == 2 else cols[0]
    if order is not None:
        out[order] = out.copy()
    return out


def _alternate(v: np.ndarray, starts: np.ndarray, counts: np.ndarray, time: np.ndarray,
               w: np.ndarray | None) -> np.ndarray:
    """Alternating projections of one column (rows grouped by unit: ``starts``, ``counts``)
    in place: segment sums for units, ``bincount`` for periods."""
    if not len(v):
        return v
    ww = np.ones(len(v)) if w is None else w
    wu = np.add.reduceat(ww, starts)
    wt = np.bincount(time, weights=ww)
    scale = max(float(np.abs(v).max()), 1.0)
    for _ in range(DEMEAN_MAX_ITER):
        v -= np.repeat(np.add.reduceat(v if w is None else w * v, starts) / wu, counts)
        mt = np.bincount(time, weights=v if w is None else w * v, minlength=len(wt)) / wt
        v -= mt[time]
        if float(np.abs(mt).max()) < DEMEAN_TOL * scale:  # unit means stay 0 after this
            break
    return v


def _demean_balanced(x: np.ndarray, n_units: int, w: np.ndarray | None) -> np.ndarray:
    """Two-way within transform of a balanced panel sorted by (unit, time), column by column
    on contiguous (units x periods) arrays."""
    if x.ndim == 2:
        return np.column_stack([_demean_balanced(np.ascontiguousarray(x[:, j]), n_units, w)
                                for j in range(x.shape[1])]).reshape(x.shape)
    cube = x.reshape(n_units, -1)
    if w is None:  # x - unit mean - time mean + grand mean
        out = cube - cube.mean(axis=1, keepdims=True)
        out -= out.mean(axis=0)
        return out.ravel()
    wc = w.reshape(cube.shape)
    wu, wt = wc.sum(axis=1, keepdims=True), wc.sum(axis=0)
    out = cube.copy()
    scale = max(float(np.abs(out).max()), 1.0) if out.size else 1.0
    for _ in range(DEMEAN_MAX_ITER):
        out -= (wc * out).sum(axis=1, keepdims=True) / wu
        mt = (wc * out).sum(axis=0) / wt
        out -= mt
        if float(np.abs(mt).max()) < DEMEAN_TOL * scale:
            break
    return out.ravel()


def _residualize(v: np.ndarray, X: np.ndarray | None, w: np.ndarray) -> np.ndarray:
    if X is None or X.shape[1] == 0:
        return v
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(X * sw[:, None], v * sw, rcond=None)
    return v - X @ coef


def _nested(codes: np.ndarray, cluster: np.ndarray) -> bool:
    """True when every level of ``codes`` lies in a single cluster (O(rows), no sort)."""
    one = np.empty(int(codes.max()) + 1, dtype=cluster.dtype)
    one[codes] = cluster  # some row's cluster per level
    return bool(np.array_equal(one[codes], cluster))


def fe_dof(panel: PanelData) -> int:
    """Fixed-effect levels counted in N - K (fixest/pyfixest "nonnested"): all levels minus
    one per extra effect, minus levels of effects nested in the clusters, plus one per such
    effect."""
    levels = {"unit": panel.n_units, "time": panel.n_periods}
    nested = [name for name, codes in (("unit", panel.unit), ("time", panel.time))
              if _nested(codes, panel.cluster)]
    return sum(levels.values()) - 1 - sum(levels[n] for n in nested) + len(nested)


def negative_weight_share(d_tilde: np.ndarray, d: np.ndarray, w: np.ndarray) -> float:
    """Share of treated observations whose de Chaisemartin-D'Haultfoeuille TWFE weight
    (proportional to the residual of d on the fixed effects) is negative."""
    treated = d > 0
    if not treated.any():
        return 0.0
    return float(np.sum(w[treated] * (d_tilde[treated] < 0)) / np.sum(w[treated]))


def did(panel: PanelData, settings: PanelSettings) -> PanelResult:
    """TWFE coefficient on the treatment with CR1 cluster-robust (or wild bootstrap) CI."""
    w = panel.weights if panel.weights is not None else np.ones(len(panel.y))
    cols = [panel.y, panel.d]
    if panel.covariates is not None:
        cols += list(panel.covariates.T)
    demeaned = demean(np.column_stack(cols), panel.unit, panel.time, panel.weights,
                      balanced=panel.balanced)
    y_t, d_t = demeaned[:, 0], demeaned[:, 1]
    X_t = demeaned[:, 2:] if demeaned.shape[1] > 2 else None
    d_r = _residualize(d_t, X_t, w)
    y_r = _residualize(y_t, X_t, w)
    sdd = float(np.sum(w * d_r * d_r))
    if sdd <= 0:
        raise ValueError("treatment has no variation left after the unit and time effects")
    beta = float(np.sum(w * d_r * y_r) / sdd)
    resid = y_r - beta * d_r
    n, k = len(panel.y), 1 + (0 if X_t is None else X_t.shape[1])
    scores = np.bincount(panel.cluster, weights=w * d_r * resid)
    g = len(scores)
    factor = g / (g - 1) * (n - 1) / (n - k - fe_dof(panel))
    se = float(np.sqrt(factor * np.sum(scores**2)) / sdd)
    extra: dict = {"cr1_se": se, "n_clusters": g}
    warnings: list[str] = []
    t_crit = stats.t.ppf(0.5 + settings.confidence_level / 2, g - 1)
    ci = (beta - t_crit * se, beta + t_crit * se)
    extra["inference"] = f"CR1, t({g - 1}) critical values (as pyfixest/fixest)"
    if g < settings.wild_cluster_threshold:
        lo, hi, p = wild_cluster_bootstrap(
            beta, se, w * d_r, resid, d_r, panel.cluster, sdd, factor, settings)
        ci = (lo, hi)
        extra.update({"inference": f"wild cluster bootstrap-t ({settings.wild_weights}, "
                      f"{settings.n_bootstrap} draws; {g} clusters)", "wild_p_value": p})
    if panel.staggered:
        share = negative_weight_share(d_t, panel.d, w)
        extra["negative_weight_share"] = share
        warnings.append(
            f"staggered adoption ({len(panel.cohorts)} cohorts): TWFE is biased when effects "
            f"vary over time or cohort; {share:.1%} of treated observations get negative "
            "de Chaisemartin-D'Haultfoeuille weights. Use method callaway_santanna.")
    return PanelResult(estimate=beta, se=se, ci=ci, method="did", n_units=panel.n_units,
                       n_periods=panel.n_periods, confidence_level=settings.confidence_level,
                       extra=extra, warnings=warnings)


def _wild_weights(rng: np.random.Generator, size: tuple[int, int], kind: str) -> np.ndarray:
    if kind == "webb":
        vals = np.sqrt(np.array([0.5, 1.0, 1.5]))
        return rng.choice(np.r_[-vals, vals], size=size)
    return rng.choice(np.array([-1.0, 1.0]), size=size)


def wild_cluster_bootstrap(beta: float, se: float, wd: np.ndarray, resid: np.ndarray,
                           d_r: np.ndarray, cluster: np.ndarray, sdd: float, factor: float,
                           settings: PanelSettings) -> tuple[float, float, float]:
    """Unrestricted wild cluster bootstrap-t: CI ``beta - q* se`` and the symmetric p-value
    of beta = 0. Exact for a model without covariates (FWL on the treatment alone)."""
    rng = np.random.default_rng(settings.seed)
    s_g = np.bincount(cluster, weights=wd * resid)  # per-cluster score
    dd_g = np.bincount(cluster, weights=wd * d_r)  # per-cluster sum of w d_r^2
    v = _wild_weights(rng, (settings.n_bootstrap, len(s_g)), settings.wild_weights)
    delta = (v @ s_g) / sdd  # b* - b
    scores_star = v * s_g[None, :] - delta[:, None] * dd_g[None, :]
    se_star = np.sqrt(factor * np.sum(scores_star**2, axis=1)) / sdd
    t_star = delta / np.where(se_star > 0, se_star, np.inf)
    a = settings.alpha
    q_lo, q_hi = np.quantile(t_star, [a / 2, 1 - a / 2])
    p = float(np.mean(np.abs(t_star) >= abs(beta / se))) if se > 0 else 1.0
    return beta - q_hi * se, beta - q_lo * se, p
