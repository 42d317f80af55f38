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

from e2i_pipelines.analytics.panel.cs_cells import CELL_ESTIMATORS, USES_PROPENSITY, propensity
from e2i_pipelines.analytics.panel.data import NEVER, PanelData
from e2i_pipelines.analytics.panel.result import PanelResult
from e2i_pipelines.analytics.panel.settings import PanelSettings

BOOT_CHUNK = 64


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
        return np.sqrt(np.sum(sums**2, axis=0)) / self.n

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
    per_unit = panel.unit_values(panel.cluster)
    if np.array_equal(per_unit[panel.unit], panel.cluster):
        return pd.factorize(per_unit)[0]
    warnings.append(f"cluster {panel.names.get('cluster')!r} varies within units; "
                    "callaway_santanna clusters by unit")
    return np.arange(panel.n_units)


def att_gt(panel: PanelData, method: str = "dr") -> ATTgt:
    """Every identified ATT(g,t) cell of ``panel`` by ``method`` (dr, ipw, reg)."""
    estimator = CELL_ESTIMATORS[method]
    Yt = np.ascontiguousarray(panel.wide("y").T)  # periods x units: one period is contiguous
    present = None if panel.balanced else ~np.isnan(Yt)
    X_wide = None
    if panel.covariates is not None:
        X_wide = np.stack([panel.wide(panel.covariates[:, j])
                           for j in range(panel.covariates.shape[1])], axis=2)
    # time-invariant covariates: one propensity fit per (cohort, sample), reused across t
    invariant = X_wide is None or bool(np.all(np.nanmax(X_wide, axis=1)
                                              == np.nanmin(X_wide, axis=1)))
    fits: dict[tuple, tuple] = {}
    w_rows = panel.weights if panel.weights is not None else np.ones(len(panel.y))
    w_unit = panel.unit_values(w_rows)
    w_unit = w_unit / w_unit.mean()
    cohort, ant, n = panel.cohort, panel.anticipation, panel.n_units
    warnings: list[str] = []
    groups, times, atts = [], [], []
    inf_all = np.zeros((n, len(panel.cohorts) * (panel.n_periods - 1)), order="F")
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
            if present is not None:
                both = present[t] & present[base]
                sel &= both
            idx = np.flatnonzero(sel)
            D = treated[idx].astype(np.float64)
            n_t, n_c = int(D.sum()), int(len(D) - D.sum())
            if n_t == 0 or n_c == 0:
                warnings.append(f"ATT(g={panel.periods[g]}, t={panel.periods[t]}) has "
                                f"{n_t} treated and {n_c} control units; not estimated")
                continue
            dy = Yt[t, idx] - Yt[base, idx]
            X = np.ones((len(D), 1))
            if X_wide is not None:
                X = np.column_stack([X, X_wide[idx, base, :]])
            ps = None
            if method in USES_PROPENSITY:
                key = (g, None if invariant else base, np.packbits(sel).tobytes())
                if key not in fits:
                    w_sel = w_unit[idx]
                    fits = {key: propensity(D, X, w_sel / w_sel.mean())}  # keep one fit
                ps = fits[key]
            att, inf_cell = estimator(dy, D, X, w_unit[idx], ps)
            n_cell = n if present is None else int(both.sum())  # units seen in both periods
            inf_all[idx, len(atts)] = n_cell / len(D) * inf_cell
            groups.append(g)
            times.append(t)
            atts.append(att)
    if not atts:
        raise ValueError("no ATT(g,t) cell could be estimated (no cohort with controls)")
    return ATTgt(group=np.array(groups), time=np.array(times), att=np.array(atts),
                 inf=inf_all[:, :len(atts)], unit_weight=w_unit, unit_cohort=cohort,
                 unit_cluster=_unit_cluster(panel, warnings), periods=panel.periods,
                 warnings=warnings)


def _weighted(cells: ATTgt, keep: np.ndarray, pg: np.ndarray) -> tuple[float, np.ndarray]:
    """sum_k pg_k att_k / sum pg over ``keep`` (cell indices), with its influence function
    including the estimation of the cohort shares (csdid's ``wif``)."""
    pk, ak = pg[keep], cells.att[keep]
    total = pk.sum()
    est = float(np.sum(pk * ak) / total)
    inf = cells.inf[:, keep] @ (pk / total)
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


def uniform_critical_value(cells: ATTgt, inf: np.ndarray, se: np.ndarray,
                           settings: PanelSettings) -> float:
    """Multiplier-bootstrap (Rademacher, over clusters) critical value of max_k |t_k|."""
    sums = _cluster_sums(inf, cells.unit_cluster)
    rng = np.random.default_rng(settings.seed)
    ok = se > 0
    maxes = []
    for start in range(0, settings.n_bootstrap, BOOT_CHUNK):
        b = min(BOOT_CHUNK, settings.n_bootstrap - start)
        v = rng.choice(np.array([-1.0, 1.0]), size=(b, sums.shape[0]))
        draws = (v @ sums[:, ok]) / cells.n
        maxes.append(np.max(np.abs(draws) / se[ok], axis=1))
    crit = float(np.quantile(np.concatenate(maxes), settings.confidence_level))
    return max(crit, float(stats.norm.ppf(0.5 + settings.confidence_level / 2)))


def _table(cells: ATTgt, table: pd.DataFrame, inf_k: np.ndarray, settings: PanelSettings,
           z: float) -> pd.DataFrame:
    se = cells.se(inf_k)
    crit = uniform_critical_value(cells, inf_k, se, settings)
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
    event = _table(cells, dyn, dyn_inf, settings, z).rename(columns={"key": "rel_period"})
    _, _, grp, grp_inf = aggregate(cells, "group")
    cohorts = _table(cells, grp, grp_inf, settings, z)
    sizes = {g: int(np.sum(panel.cohort == g)) for g in cohorts["key"]}
    cohorts.insert(0, "cohort", [panel.periods[g] for g in cohorts["key"]])
    cohorts.insert(1, "n_units", [sizes[g] for g in cohorts["key"]])
    cohorts = _cohort_balance(panel, cells, cohorts).drop(columns="key")
    _, _, cal, cal_inf = aggregate(cells, "calendar")
    calendar = _table(cells, cal, cal_inf, settings, z)
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
