"""``callaway_santanna``: ATT(g,t) per cohort g and period t, and its aggregations.

As R ``did`` / csdid with a varying base period: a pre-period cell compares t with t-1, a
post-period cell compares t with the cohort's last untreated period g-1-anticipation. Controls
are never-treated units, or (``not_yet_treated``) also units first treated after
t + anticipation. Each cell is a 2x2 DiD by ``dr`` (default), ``ipw`` or ``reg``
(:mod:`.cs_cells`) on the units observed in both periods, covariates taken at the base period.

Aggregations (with the influence of the estimated cohort shares): simple (the overall ATT),
dynamic (the event study, leads and lags), group and calendar. Standard errors are clustered
(by unit unless the spec's ``cluster`` is constant within units); uniform bands come from a
multiplier bootstrap over clusters (Rademacher).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from e2i_pipelines.analytics.panel.cs_cells import (
    CELL_ESTIMATORS,
    USES_PROPENSITY,
    Changes,
    propensity,
)
from e2i_pipelines.analytics.panel.data import NEVER, PanelData
from e2i_pipelines.analytics.panel.result import PanelResult
from e2i_pipelines.analytics.panel.settings import PanelSettings
from e2i_pipelines.core.budget import single_threaded_blas

BOOT_BLOCK_VALUES = 1 << 23
"""Bootstrap signs drawn at once (64 MiB of float64): the block of draws per matmul."""


@dataclass
class ATTgt:
    """ATT(g,t) cells (cohort code, period code), their estimates and influence functions
    (units x cells), and what the aggregations need per unit."""

    group: np.ndarray
    time: np.ndarray
    att: np.ndarray
    inf: np.ndarray
    unit_weight: np.ndarray  # mean 1 over units
    unit_cohort: np.ndarray
    unit_cluster: np.ndarray
    periods: np.ndarray
    warnings: list[str]

    @property
    def n(self) -> int:
        return len(self.unit_cohort)

    @property
    def post(self) -> np.ndarray:
        return self.group <= self.time

    def se(self, inf: np.ndarray) -> np.ndarray:
        """Cluster-robust SE of estimates with influence functions ``inf`` (units[, k])."""
        sums = _cluster_sums(inf, self.unit_cluster)
        return np.sqrt(np.einsum("ij,ij->j", sums, sums)) / self.n  # no squared copy

    def pg(self) -> np.ndarray:
        """Per cell: the share (weighted) of units in the cell's cohort."""
        shares = {g: np.mean(self.unit_weight * (self.unit_cohort == g))
                  for g in np.unique(self.group)}
        return np.array([shares[g] for g in self.group])


def _cluster_sums(inf: np.ndarray, cluster: np.ndarray) -> np.ndarray:
    """Influence functions summed within clusters (clusters x k)."""
    inf2 = inf if inf.ndim == 2 else inf[:, None]
    if len(cluster) == int(cluster.max()) + 1 and np.array_equal(cluster, np.arange(len(cluster))):
        return inf2
    order = np.argsort(cluster, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(cluster[order])) + 1]
    return np.add.reduceat(inf2[order], starts, axis=0)


def _unit_cluster(panel: PanelData, warnings: list[str]) -> np.ndarray:
    if panel.names.get("cluster") == panel.names.get("unit"):
        return np.arange(panel.n_units)
    per_unit = panel.unit_values(panel.cluster)
    if np.array_equal(per_unit[panel.unit], panel.cluster):
        return pd.factorize(per_unit)[0]
    warnings.append(f"cluster {panel.names.get('cluster')!r} varies within units; "
                    "callaway_santanna clusters by unit")
    return np.arange(panel.n_units)


@dataclass
class _Batch:
    """Cells (column indices, periods, base periods, influence scales) sharing one sample."""

    idx: np.ndarray  # unit codes in the sample
    D: np.ndarray
    base0: int  # a base period of the batch (covariates are taken there)
    cols: list[int]
    ts: list[int]
    bases: list[int]
    scales: list[float]


def _batches(panel: PanelData, invariant: bool, warnings: list[str]) -> tuple[list, list]:
    """The identified cells in csdid's order as (cohort, period) and their batches: cells of one
    cohort with the same sample (and base period, unless covariates are time-invariant)."""
    cohort, ant, n = panel.cohort, panel.anticipation, panel.n_units
    present = None if panel.balanced else ~np.isnan(_wide(panel, panel.y).T)
    cells: list[tuple[int, int]] = []
    batches: dict[tuple, _Batch] = {}
    for g in panel.cohorts:
        last_pre = g - ant - 1
        if last_pre < 0:
            warnings.append(f"cohort {panel.periods[g]} has no period before treatment and "
                            f"anticipation; dropped")
            continue
        treated = cohort == g
        for t in range(1, panel.n_periods):
            base = last_pre if g - ant <= t else t - 1
            control = cohort == NEVER
            if panel.control_group == "not_yet_treated":
                control = control | ((cohort > t + ant) & ~treated)
            sel = treated | control
            n_cell = n
            if present is not None:
                both = present[t] & present[base]
                sel &= both
                n_cell = int(both.sum())  # units seen in both periods
            n_t, n_sel = int(np.sum(sel & treated)), int(sel.sum())
            if n_t == 0 or n_t == n_sel:
                warnings.append(f"ATT(g={panel.periods[g]}, t={panel.periods[t]}) has "
                                f"{n_t} treated and {n_sel - n_t} control units; not estimated")
                continue
            key = (g, None if invariant else base, np.packbits(sel).tobytes())
            if key not in batches:
                idx = np.flatnonzero(sel)
                batches[key] = _Batch(idx, treated[idx].astype(np.float64), base, [], [], [], [])
            batch = batches[key]
            batch.cols.append(len(cells))
            batch.ts.append(t)
            batch.bases.append(base)
            batch.scales.append(n_cell / n_sel)
            cells.append((g, t))
    return cells, list(batches.values())


def _wide(panel: PanelData, values: np.ndarray) -> np.ndarray:
    """Per-row ``values`` (rows[, k]) as units x periods[ x k], NaN where a row is missing; a
    reshaped view for a balanced panel (rows sorted by unit, then time)."""
    shape = (panel.n_units, panel.n_periods, *values.shape[1:])
    if panel.balanced:
        return values.reshape(shape)
    out = np.full(shape, np.nan)
    out[panel.unit, panel.time] = values
    return out


def _estimate_batches(batches: list[_Batch], estimator, method: str, Y: np.ndarray,
                      X_wide: np.ndarray | None, w_unit: np.ndarray, att: np.ndarray,
                      inf_all: np.ndarray) -> None:
    """Fill ``att`` and the columns of ``inf_all`` batch by batch."""
    for b in batches:
        DY = Changes(Y, b.idx, np.asarray(b.ts, dtype=np.int64),
                     np.asarray(b.bases, dtype=np.int64))
        X = np.ones((len(b.idx), 1))
        if X_wide is not None:
            X = np.column_stack([X, X_wide[b.idx, b.base0, :]])
        w = w_unit[b.idx]
        ps = propensity(b.D, X, w / w.mean()) if method in USES_PROPENSITY else None
        att[b.cols], influence = estimator(DY, b.D, X, w, ps)
        influence.write(DY, inf_all, np.asarray(b.cols), np.asarray(b.scales))


def att_gt(panel: PanelData, method: str = "dr") -> ATTgt:
    """Every identified ATT(g,t) cell of ``panel`` by ``method`` (dr, ipw, reg), the cells
    that share a sample estimated together (one design matrix, propensity fit and OLS)."""
    estimator = CELL_ESTIMATORS[method]
    Y = _wide(panel, panel.y)  # units x periods: a unit's periods are contiguous
    X_wide = None
    if panel.covariates is not None:
        X_wide = _wide(panel, panel.covariates)
    # time-invariant covariates: one fit per (cohort, sample), shared by pre and post cells
    invariant = X_wide is None or (bool(np.all(X_wide == X_wide[:, :1])) if panel.balanced
                                   else bool(np.all(np.nanmax(X_wide, axis=1)
                                                    == np.nanmin(X_wide, axis=1))))
    w_unit = np.ones(panel.n_units)
    if panel.weights is not None:
        w_unit = panel.unit_values(panel.weights)
        w_unit = w_unit / w_unit.mean()
    warnings: list[str] = []
    cells, batches = _batches(panel, invariant, warnings)
    if not cells:
        raise ValueError("no ATT(g,t) cell could be estimated (no cohort with controls)")
    att = np.zeros(len(cells))
    inf_all = np.zeros((panel.n_units, len(cells)))
    with single_threaded_blas():  # tall, thin products: BLAS threads only spin
        _estimate_batches(batches, estimator, method, Y, X_wide, w_unit, att, inf_all)
    group, time = (np.array(c) for c in zip(*cells, strict=True))
    return ATTgt(group=group, time=time, att=att, inf=inf_all, unit_weight=w_unit,
                 unit_cohort=panel.cohort, unit_cluster=_unit_cluster(panel, warnings),
                 periods=panel.periods, warnings=warnings)


def _weighted(cells: ATTgt, keep: np.ndarray, pg: np.ndarray) -> tuple[float, np.ndarray]:
    """sum_k pg_k att_k / sum pg over ``keep`` (cell indices), with its influence function
    including the estimation of the cohort shares (csdid's ``wif``)."""
    pk, ak = pg[keep], cells.att[keep]
    total = pk.sum()
    est = float(np.sum(pk * ak) / total)
    weight = np.zeros(len(cells.att))
    weight[keep] = pk / total
    inf = np.einsum("ij,j->i", cells.inf, weight)  # no column copy, no BLAS thread wake-up
    # wif @ att without the units x cells matrix: numerator_ik = w_i 1{G_i = g_k} - pg_k
    size = len(cells.periods) + 1  # cohort codes < n_periods; NEVER (-1) hits the last slot
    a_by_g, c_by_g = np.zeros(size), np.zeros(size)
    np.add.at(a_by_g, cells.group[keep], ak)
    np.add.at(c_by_g, cells.group[keep], 1.0)
    w, uc = cells.unit_weight, cells.unit_cohort
    num_a = w * a_by_g[uc] - np.sum(pk * ak)
    row_sum = w * c_by_g[uc] - total
    wif_att = num_a / total - row_sum * np.sum(pk * ak) / total**2
    return est, inf + wif_att


def aggregate(cells: ATTgt, kind: str) -> tuple[float, np.ndarray, pd.DataFrame | None,
                                                  np.ndarray | None]:
    """Overall estimate and influence function, and (except ``simple``) the table of the
    aggregation's parts (``key``, ``estimate``) with their influence functions."""
    pg = cells.pg()
    post = np.flatnonzero(cells.post)
    if kind == "simple":
        est, inf = _weighted(cells, post, pg)
        return est, inf, None, None
    if kind == "dynamic":
        e = cells.time - cells.group
        keys = np.unique(e)
        parts = [_weighted(cells, np.flatnonzero(e == k), pg) for k in keys]
        lags = keys >= 0
    elif kind == "group":
        keys = np.unique(cells.group[post])
        parts = []
        for g in keys:
            which = post[cells.group[post] == g]
            parts.append((float(cells.att[which].mean()), cells.inf[:, which].mean(axis=1)))
        lags = np.ones(len(keys), dtype=bool)
    elif kind == "calendar":
        keys = np.unique(cells.time[post])
        parts = [_weighted(cells, post[cells.time[post] == t], pg) for t in keys]
        lags = np.ones(len(keys), dtype=bool)
    else:
        raise ValueError(f"unknown aggregation {kind!r}")
    est_k = np.array([p[0] for p in parts])
    inf_k = np.column_stack([p[1] for p in parts])
    table = pd.DataFrame({"key": keys, "estimate": est_k})
    if kind == "group":
        pgg = np.array([np.mean(cells.unit_weight * (cells.unit_cohort == g)) for g in keys])
        sub = ATTgt(group=keys, time=keys, att=est_k, inf=inf_k,
                    unit_weight=cells.unit_weight, unit_cohort=cells.unit_cohort,
                    unit_cluster=cells.unit_cluster, periods=cells.periods, warnings=[])
        est, inf = _weighted(sub, np.arange(len(keys)), pgg)
    else:
        est = float(est_k[lags].mean())
        inf = inf_k[:, lags].mean(axis=1)
    return est, inf, table, inf_k


_SIGNS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1) * 2.0 - 1.0
"""Byte value -> its 8 bits as Rademacher signs (256 x 8)."""


def _rademacher(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    """(b x n) Rademacher signs from random bits (8 draws per random byte, one table look-up)."""
    raw = rng.integers(0, 256, size=(b, (n + 7) // 8), dtype=np.uint8)
    return _SIGNS[raw].reshape(b, -1)[:, :n]


def uniform_critical_values(cells: ATTgt, infs: list[np.ndarray], ses: list[np.ndarray],
                            settings: PanelSettings) -> list[float]:
    """Multiplier-bootstrap (Rademacher, over clusters) critical value of max_k |t_k| for each
    table (influence functions ``infs[j]``, SEs ``ses[j]``): one set of draws for all tables,
    in blocks of at most :data:`BOOT_BLOCK_VALUES` signs, seeded by ``settings.seed``."""
    sums = _cluster_sums(np.column_stack(infs), cells.unit_cluster)
    se = np.concatenate(ses)
    bounds = np.cumsum([0] + [s.shape[0] for s in ses])
    ok = se > 0
    rng = np.random.default_rng(settings.seed)
    block = int(np.clip(BOOT_BLOCK_VALUES // sums.shape[0], 1, settings.n_bootstrap))
    maxes = np.zeros((settings.n_bootstrap, len(ses)))
    with single_threaded_blas():  # a short, wide block of draws: threaded BLAS only spins
        for start in range(0, settings.n_bootstrap, block):
            b = min(block, settings.n_bootstrap - start)
            t = np.abs(_rademacher(rng, b, sums.shape[0]) @ sums) / cells.n
            t[:, ok] /= se[ok]
            t[:, ~ok] = 0.0
            for j in range(len(ses)):
                if bounds[j + 1] > bounds[j]:
                    maxes[start:start + b, j] = t[:, bounds[j]:bounds[j + 1]].max(axis=1)
    z = float(stats.norm.ppf(0.5 + settings.confidence_level / 2))
    crits = np.quantile(maxes, settings.confidence_level, axis=0)
    return [max(float(c), z) for c in crits]


def _table(table: pd.DataFrame, se: np.ndarray, crit: float, z: float) -> pd.DataFrame:
    """``table`` with SEs, pointwise CIs and the uniform band of critical value ``crit``."""
    est = table["estimate"].to_numpy()
    return table.assign(se=se, ci_low=est - z * se, ci_high=est + z * se,
                        band_low=est - crit * se, band_high=est + crit * se)


def _cohort_balance(panel: PanelData, cells: ATTgt, cohorts: pd.DataFrame) -> pd.DataFrame:
    """Each cohort's share of the overall ATT's weight and its covariate means (first row of
    each unit), beside the never-treated units' means (``<covariate>_never``)."""
    shares = np.array([np.mean(cells.unit_weight * (cells.unit_cohort == g))
                       for g in cohorts["key"]])
    out = cohorts.assign(weight_share=shares / shares.sum())
    if panel.covariates is None:
        return out
    first = panel.unit_values(panel.covariates)
    never = panel.cohort == NEVER
    for j, name in enumerate(panel.covariate_names):
        out[f"{name}_mean"] = [float(first[panel.cohort == g, j].mean()) for g in out["key"]]
        out[f"{name}_never"] = float(first[never, j].mean()) if never.any() else np.nan
    return out


def callaway_santanna(panel: PanelData, settings: PanelSettings) -> PanelResult:
    """Overall ATT (simple aggregation) with the event study, cohort and calendar tables."""
    cells = att_gt(panel, settings.cs_method)
    z = float(stats.norm.ppf(0.5 + settings.confidence_level / 2))
    est, inf, _, _ = aggregate(cells, "simple")
    se = float(cells.se(inf)[0])
    _, _, dyn, dyn_inf = aggregate(cells, "dynamic")
    _, _, grp, grp_inf = aggregate(cells, "group")
    _, _, cal, cal_inf = aggregate(cells, "calendar")
    infs = [dyn_inf, grp_inf, cal_inf]
    ses = [cells.se(i) for i in infs]
    crits = uniform_critical_values(cells, infs, ses, settings)
    event, cohorts, calendar = (_table(tab, s, c, z) for tab, s, c in
                                zip((dyn, grp, cal), ses, crits, strict=True))
    event = event.rename(columns={"key": "rel_period"})
    sizes = {g: int(np.sum(panel.cohort == g)) for g in cohorts["key"]}
    cohorts.insert(0, "cohort", [panel.periods[g] for g in cohorts["key"]])
    cohorts.insert(1, "n_units", [sizes[g] for g in cohorts["key"]])
    cohorts = _cohort_balance(panel, cells, cohorts).drop(columns="key")
    calendar.insert(0, "period", [panel.periods[t] for t in calendar["key"]])
    cell_se = cells.se(cells.inf)
    gt = pd.DataFrame({"cohort": panel.periods[cells.group], "period": panel.periods[cells.time],
                       "estimate": cells.att, "se": cell_se})
    extra = {"att_gt": gt.to_dict("records"), "calendar": calendar.drop(columns="key")
             .to_dict("records"), "estimator": settings.cs_method,
             "control_group": panel.control_group, "anticipation": panel.anticipation,
             "n_clusters": int(cells.unit_cluster.max()) + 1,
             "band": f"uniform {settings.confidence_level:.0%} multiplier bootstrap "
                     f"({settings.n_bootstrap} draws, clustered)"}
    return PanelResult(estimate=est, se=se, ci=(est - z * se, est + z * se),
                       method="callaway_santanna", n_units=panel.n_units,
                       n_periods=panel.n_periods, confidence_level=settings.confidence_level,
                       event_study=event, cohorts=cohorts, extra=extra,
                       warnings=list(cells.warnings))
