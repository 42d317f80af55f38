"""Checks of a panel estimate: pre-trends and placebo in time.

* ``pre_trends``: a joint Wald test that every lead (rel_period < 0) of the Callaway-Sant'Anna
  event study is 0, with the leads' cluster-robust covariance; warns when p < alpha; plot.
* ``placebo_in_time``: every cohort's treatment moved ``k`` periods earlier inside its
  pre-period (its real treated periods dropped); re-estimated by the same method, the effect
  must be ~0 (the CI covers 0).
* ``placebo_in_space``: for synthetic control and synthetic DiD, every donor as a fake treated
  unit (RMSPE-ratio rank p-value) and leave-one-out over the weighted donors
  (:func:`~.synth.placebo_in_space_check`); for ``did`` and ``callaway_santanna``, leave one
  cohort out (:func:`leave_one_cohort_out`): no single cohort may carry the conclusion.

A check that cannot run on a panel (too few pre-periods) is skipped with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats

from e2i_pipelines.analytics.panel.callaway_santanna import aggregate, att_gt
from e2i_pipelines.analytics.panel.data import NEVER, PanelData
from e2i_pipelines.analytics.panel.result import event_study_figure
from e2i_pipelines.analytics.panel.settings import PanelSettings

PANEL_CHECKS = ("pre_trends", "placebo_in_time", "placebo_in_space")
PLACEBO_METHODS = ("did", "callaway_santanna")
"""Methods the pre-trend test and the placebo in time apply to (others skip them with the
reason)."""
SYNTH_METHODS = ("synthetic_control", "synthetic_did")
"""Methods the placebo in space applies to."""


@dataclass
class PanelCheck:
    """One check: passed (None when skipped), metadata, optional figure."""

    name: str
    passed: bool | None
    metadata: dict[str, Any]
    figure: Any = None
    skipped: str | None = None

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "skipped": self.skipped,
                **self.metadata}


def pre_trends(panel: PanelData, settings: PanelSettings) -> PanelCheck:
    """Joint Wald test of the event-study leads (short differences, varying base)."""
    cells = att_gt(panel, "reg" if panel.covariates is None else settings.cs_method)
    dyn_est, dyn_inf, table, inf_k = aggregate(cells, "dynamic")
    leads = table["key"].to_numpy() < 0
    if not leads.any():
        return PanelCheck("pre_trends", None, {}, skipped="no pre-treatment periods to test "
                          "(every cohort is treated in the panel's second period)")
    b = table["estimate"].to_numpy()[leads]
    sums = np.column_stack([np.bincount(cells.unit_cluster, weights=inf_k[:, j])
                            for j in np.flatnonzero(leads)])
    cov = sums.T @ sums / cells.n**2
    wald = float(b @ np.linalg.pinv(cov) @ b)
    df = int(np.linalg.matrix_rank(cov))
    p = float(stats.chi2.sf(wald, df)) if df else 1.0
    se = np.sqrt(np.diag(cov))
    z = float(stats.norm.ppf(0.5 + settings.confidence_level / 2))
    es = table.rename(columns={"key": "rel_period"}).assign(
        se=cells.se(inf_k), ci_low=lambda t: t["estimate"] - z * t["se"],
        ci_high=lambda t: t["estimate"] + z * t["se"])
    leads_rows = [{"rel_period": int(r), "estimate": float(e), "se": float(s)}
                  for r, e, s in zip(table["key"][leads], b, se, strict=True)]
    honest = relative_magnitudes_bound(table, leads, dyn_est, float(cells.se(dyn_inf)[0]), z)
    return PanelCheck(
        "pre_trends", p >= settings.alpha,
        {"wald_statistic": wald, "df": df, "p_value": p, "leads": leads_rows,
         "honest_bound": honest,
         "rule": f"joint Wald test of {int(leads.sum())} leads = 0: passes when p >= "
                 f"{settings.alpha:g}"},
        figure=event_study_figure(es, "pre-trends"))


def relative_magnitudes_bound(table, leads: np.ndarray, estimate: float, se: float, z: float,
                              mbar: float = 1.0) -> dict[str, Any]:
    """Rambachan-Roth relative magnitudes (M-bar) for the average post-period effect, as an
    identified set: each post period's trend change is at most M-bar times the largest
    pre-period one (the leads are one-period changes), so the bias of event time e is at most
    (e + 1) M-bar m. The set is widened by z se for sampling error (conservative; not RR's
    conditional CI)."""
    m = float(np.max(np.abs(table["estimate"].to_numpy()[leads])))
    lags = table["key"].to_numpy()[~leads]
    half = mbar * m * float(np.mean(lags + 1))
    return {"mbar": mbar, "max_pre_change": m, "estimate": estimate,
            "set_low": estimate - half, "set_high": estimate + half,
            "ci_low": estimate - half - z * se, "ci_high": estimate + half + z * se,
            "of": "average of the post-period event-study effects"}


def placebo_panel(panel: PanelData, shift: int) -> PanelData | None:
    """``panel`` with each cohort moved ``shift`` periods earlier and the real treated
    periods (from treatment minus anticipation) of treated units dropped; None when no cohort
    keeps a period before its placebo date."""
    real = panel.cohort[panel.unit]
    keep = (real == NEVER) | (panel.time < real - panel.anticipation)
    fake = np.where(panel.cohort == NEVER, NEVER, panel.cohort - shift)
    drop_unit = (fake != NEVER) & (fake - panel.anticipation < 1)  # no placebo pre-period
    keep &= ~drop_unit[panel.unit]
    fake = np.where(drop_unit, NEVER, fake)
    if not np.any(fake[np.unique(panel.unit[keep])] != NEVER):
        return None
    on = fake[panel.unit[keep]]
    d = (panel.time[keep] >= on) & (on != NEVER)
    return keep_rows(panel, keep, d=d.astype(np.float64), cohort=fake)


def keep_rows(panel: PanelData, rows: np.ndarray, *, d: np.ndarray | None = None,
              cohort: np.ndarray | None = None, balanced: bool = False) -> PanelData:
    """``panel`` restricted to the rows where ``rows`` is true, units and clusters re-coded;
    ``d`` (per kept row) and ``cohort`` (per original unit) replace the panel's when given."""
    units, unit = np.unique(panel.unit[rows], return_inverse=True)
    return replace(panel, units=panel.units[units], unit=unit, time=panel.time[rows],
                   y=panel.y[rows], d=panel.d[rows] if d is None else d,
                   covariates=None if panel.covariates is None else panel.covariates[rows],
                   weights=None if panel.weights is None else panel.weights[rows],
                   cluster=np.unique(panel.cluster[rows], return_inverse=True)[1],
                   cohort=(panel.cohort if cohort is None else cohort)[units],
                   balanced=balanced, warnings=[])


def placebo_in_time(panel: PanelData, method: str, settings: PanelSettings,
                    estimators: dict[str, Any]) -> PanelCheck:
    """Re-estimate with the treatment moved ``settings.placebo_shift`` periods earlier."""
    shift = settings.placebo_shift
    fake = placebo_panel(panel, shift)
    if fake is None:
        return PanelCheck("placebo_in_time", None, {}, skipped=(
            f"no cohort has a period before its placebo date ({shift} period(s) earlier)"))
    try:
        res = estimators[method](fake, replace(settings, n_bootstrap=min(
            settings.n_bootstrap, 199)))
    except (ValueError, np.linalg.LinAlgError) as exc:
        return PanelCheck("placebo_in_time", None, {},
                          skipped=f"placebo panel cannot be estimated: {exc}")
    covers = bool(res.ci[0] <= 0.0 <= res.ci[1])
    meta = {"placebo_effect": res.estimate, "ci_low": res.ci[0], "ci_high": res.ci[1],
            "std_error": res.se, "shift_periods": shift, "method": method,
            "rule": "the placebo effect's CI must cover 0"}
    figure = event_study_figure(res.event_study, "placebo in time") \
        if res.event_study is not None and len(res.event_study) else None
    return PanelCheck("placebo_in_time", covers, meta, figure=figure)


def run_checks(panel: PanelData, method: str, settings: PanelSettings,
               estimators: dict[str, Any], only: tuple[str, ...] = PANEL_CHECKS
               ) -> list[PanelCheck]:
    """The selected panel checks (binary treatments; a dose skips them with the reason)."""
    out = []
    for name in only:
        applies = (SYNTH_METHODS + PLACEBO_METHODS) if name == "placebo_in_space" \
            else PLACEBO_METHODS
        if panel.treatment_type == "continuous":
            out.append(PanelCheck(name, None, {}, skipped="applies to a binary treatment "
                                  "(treatment_type: continuous)"))
        elif method not in applies:
            out.append(PanelCheck(name, None, {}, skipped=f"applies to methods "
                                  f"{list(applies)}, not {method}"))
        elif name == "pre_trends":
            out.append(pre_trends(panel, settings))
        elif name == "placebo_in_time":
            out.append(placebo_in_time(panel, method, settings, estimators))
        elif method in SYNTH_METHODS:
            out.append(placebo_in_space(panel, settings))
        else:
            out.append(leave_one_cohort_out(panel, method, settings, estimators))
    return out


def placebo_in_space(panel: PanelData, settings: PanelSettings) -> PanelCheck:
    """Part B's placebo in space / leave-one-out check (synthetic control)."""
    from e2i_pipelines.analytics.panel.synth import placebo_in_space_check

    try:
        passed, meta, figure = placebo_in_space_check(panel, settings)
    except ValueError as exc:
        return PanelCheck("placebo_in_space", None, {},
                          skipped=f"placebo panel cannot be estimated: {exc}")
    return PanelCheck("placebo_in_space", passed, meta, figure=figure)


def leave_one_cohort_out(panel: PanelData, method: str, settings: PanelSettings,
                         estimators: dict[str, Any]) -> PanelCheck:
    """Re-estimate without each treated cohort in turn (its units dropped). Passes when no
    single cohort carries the conclusion: every estimate keeps the full estimate's sign, and
    when the full CI excludes 0 every leave-one-out CI does too."""
    cohorts = panel.cohorts
    if len(cohorts) < 2:
        return PanelCheck("placebo_in_space", None, {}, skipped=(
            f"leave one cohort out needs at least 2 treated cohorts (the panel has "
            f"{len(cohorts)})"))
    from e2i_pipelines.analytics.panel.synth import _labels

    quick = replace(settings, n_bootstrap=min(settings.n_bootstrap, 199))
    try:
        full = estimators[method](panel, quick)
        rows = []
        for g, name in zip(cohorts, _labels(panel.periods[cohorts]), strict=True):
            dropped = panel.cohort == g  # whole units go, so a balanced panel stays balanced
            res = estimators[method](keep_rows(panel, ~dropped[panel.unit],
                                               balanced=panel.balanced), quick)
            rows.append({"cohort": name, "units_dropped": int(dropped.sum()),
                         "estimate": res.estimate, "ci_low": res.ci[0], "ci_high": res.ci[1]})
    except (ValueError, np.linalg.LinAlgError) as exc:
        return PanelCheck("placebo_in_space", None, {},
                          skipped=f"a leave-one-cohort-out panel cannot be estimated: {exc}")
    sign = np.sign(full.estimate)
    significant = not (full.ci[0] <= 0.0 <= full.ci[1])
    holds = [bool(np.sign(r["estimate"]) == sign
                  and (not significant or not (r["ci_low"] <= 0.0 <= r["ci_high"])))
             for r in rows]
    for row, ok in zip(rows, holds, strict=True):
        row["conclusion_holds"] = ok
    meta = {"estimate": full.estimate, "ci_low": full.ci[0], "ci_high": full.ci[1],
            "method": method, "leave_one_cohort_out": rows,
            "range_low": min(r["estimate"] for r in rows),
            "range_high": max(r["estimate"] for r in rows),
            "rule": "without any one cohort the estimate keeps its sign, and its CI excludes 0 "
                    "when the full CI does"}
    return PanelCheck("placebo_in_space", all(holds), meta,
                      figure=_leave_one_out_figure(full, rows))


def _leave_one_out_figure(full: Any, rows: list[dict[str, Any]]):
    """Each leave-one-cohort-out estimate with its CI against the full estimate's band."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.5 * len(rows) + 1.5))
    pos = np.arange(len(rows))
    est = np.array([r["estimate"] for r in rows])
    err = np.array([[r["estimate"] - r["ci_low"] for r in rows],
                    [r["ci_high"] - r["estimate"] for r in rows]])
    ax.axvspan(full.ci[0], full.ci[1], color="tab:blue", alpha=0.15, label="all cohorts (CI)")
    ax.axvline(full.estimate, color="tab:blue")
    ax.axvline(0.0, color="grey", lw=0.8, ls="--")
    ax.errorbar(est, pos, xerr=err, fmt="o", color="black", capsize=3)
    ax.set_yticks(pos, [f"without {r['cohort']}" for r in rows])
    ax.set_xlabel("overall effect")
    ax.set_title("leave one cohort out")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig
