"""Synthetic control (Abadie, Diamond & Hainmueller 2010) on a units x periods matrix.

For each treated unit the donor weights solve ``min ||V^(1/2) (x1 - X0 w)||^2`` over the
simplex (w >= 0, sum w = 1); ``x`` stacks the pre-period outcomes and, optionally,
predictor rows (covariates, standardised, weighted by ``v``). The simplex-constrained least
squares is solved exactly enough by Lawson-Hanson NNLS on an augmented system whose first row
``sqrt(M) * (1' w - 1)`` carries the sum-to-one constraint with a large ``M``
(:func:`simplex_least_squares`), then renormalised.

Inference is placebo in space (:func:`placebo_in_space`): every donor in turn is the fake
treated unit, fitted on the remaining donors; the p-value is the rank of the treated unit's
post/pre RMSPE ratio among all ratios. The same function is the placebo-in-space /
leave-one-out check the panel checks call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.optimize as so
import scipy.stats as st

from e2i_pipelines.analytics.panel.data import NEVER, PanelData
from e2i_pipelines.analytics.panel.result import PanelResult
from e2i_pipelines.analytics.panel.settings import PanelSettings
from e2i_pipelines.core.errors import DataValidationError

MAX_TREATED = 10
"""Default limit on treated units: synthetic control is a few-treated-units design."""


@dataclass(frozen=True)
class SynthFit:
    """One treated unit's synthetic control."""

    weights: np.ndarray  # (n_donors,) on the simplex
    gap: np.ndarray  # (n_periods,) treated - synthetic, every period
    pre_rmspe: float
    post_rmspe: float

    @property
    def ratio(self) -> float:
        """Post/pre RMSPE ratio (the placebo test's statistic)."""
        return self.post_rmspe / max(self.pre_rmspe, 1e-12)


@dataclass(frozen=True)
class PlaceboResult:
    """Placebo in space: each donor's ratio and post gap, and the rank p-values."""

    donor_ratios: np.ndarray  # (n_donors,)
    donor_effects: np.ndarray  # (n_donors,) mean post-period gap of each placebo
    donor_gaps: np.ndarray  # (n_donors, n_periods) each placebo's gap
    p_values: np.ndarray  # (n_treated,) rank p-value of each treated unit
    p_value: float  # the mean treated ratio ranked among the placebo ratios


@dataclass
class SynthResult:
    """Synthetic control for a few treated units with a common first treated period."""

    estimate: float  # mean post-period gap over treated units
    se: float  # SD of the placebos' mean post gap (the estimator's null spread)
    ci_low: float
    ci_high: float
    weights: np.ndarray  # (n_treated, n_donors)
    gaps: np.ndarray  # (n_treated, n_periods)
    pre_rmspe: np.ndarray  # (n_treated,)
    post_rmspe: np.ndarray
    donors: np.ndarray  # donor row indices into Y
    placebo: PlaceboResult | None
    details: dict = field(default_factory=dict)


def simplex_least_squares(A: np.ndarray, b: np.ndarray, penalty: float = 1e8) -> np.ndarray:
    """argmin ||A w - b|| over w >= 0, sum(w) = 1 (NNLS on the augmented system)."""
    k = A.shape[1]
    if k == 1:
        return np.ones(1)
    scale = max(float(np.sqrt(np.square(A).sum() / k)), 1e-12)
    row = np.sqrt(penalty) * scale
    A_aug = np.vstack([np.full((1, k), row), A])
    b_aug = np.concatenate([[row], b])
    w, _ = so.nnls(A_aug, b_aug, maxiter=50 * k)
    total = w.sum()
    return w / total if total > 0 else np.full(k, 1.0 / k)


def _design(Y: np.ndarray, Z: np.ndarray | None, v: np.ndarray | None,
            pre: int) -> np.ndarray:
    """Rows to match per unit: pre-period outcomes plus weighted, standardised predictors."""
    parts = [Y[:, :pre]]
    if Z is not None and Z.shape[1]:
        sd = Z.std(axis=0)
        Zs = (Z - Z.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
        # put predictors on the outcome's scale so v is a relative importance
        ys = max(float(Y[:, :pre].std()), 1e-12)
        vv = np.ones(Z.shape[1]) if v is None else np.asarray(v, dtype=np.float64)
        parts.append(Zs * ys * np.sqrt(vv))
    return np.hstack(parts)  # (units, rows)


def fit_one(Y: np.ndarray, D: np.ndarray, unit: int, donors: np.ndarray,
            first_treated: int) -> SynthFit:
    """Synthetic control of row ``unit`` of ``Y`` from rows ``donors`` (D: design rows)."""
    w = simplex_least_squares(D[donors].T, D[unit])
    gap = Y[unit] - w @ Y[donors]
    pre, post = gap[:first_treated], gap[first_treated:]
    return SynthFit(w, gap, float(np.sqrt(np.mean(pre ** 2))),
                    float(np.sqrt(np.mean(post ** 2))))


def placebo_in_space(Y: np.ndarray, treated: np.ndarray, first_treated: int,
                     fits: list[SynthFit] | None = None, Z: np.ndarray | None = None,
                     v: np.ndarray | None = None) -> PlaceboResult:
    """Placebo in space / leave-one-out for synthetic control.

    Every donor (a unit not in ``treated``) is refitted as a fake treated unit from the other
    donors. Each treated unit's p-value is ``(1 + #{placebo ratio >= its ratio}) /
    (1 + n_donors)``; the overall p-value ranks the treated units' mean ratio the same way.
    ``fits`` (the treated units' own fits) are computed when not given.
    """
    treated = np.asarray(treated, dtype=np.int64)
    donors = np.setdiff1d(np.arange(Y.shape[0]), treated)
    D = _design(Y, Z, v, first_treated)
    if fits is None:
        fits = [fit_one(Y, D, int(u), donors, first_treated) for u in treated]
    ratios, gaps = np.empty(donors.size), np.empty((donors.size, Y.shape[1]))
    for i, j in enumerate(donors):
        f = fit_one(Y, D, int(j), np.delete(donors, i), first_treated)
        ratios[i], gaps[i] = f.ratio, f.gap
    effects = gaps[:, first_treated:].mean(axis=1)
    own = np.array([f.ratio for f in fits])
    p = (1 + (ratios[None, :] >= own[:, None]).sum(axis=1)) / (1 + donors.size)
    p_all = (1 + int((ratios >= own.mean()).sum())) / (1 + donors.size)
    return PlaceboResult(ratios, effects, gaps, p, float(p_all))


def synthetic_control(Y: np.ndarray, treated: np.ndarray | list[int], first_treated: int,
                      *, max_treated: int = MAX_TREATED, Z: np.ndarray | None = None,
                      v: np.ndarray | None = None, placebo: bool = True,
                      confidence_level: float = 0.95) -> SynthResult:
    """Synthetic control for ``treated`` rows of ``Y`` (units x periods), treated from column
    ``first_treated`` on; donors are all other rows. ``Z`` (units x k) adds predictors."""
    Y = np.asarray(Y, dtype=np.float64)
    treated = np.unique(np.asarray(treated, dtype=np.int64))
    n, T = Y.shape
    _validate(Y, treated, first_treated, max_treated, Z, v)
    donors = np.setdiff1d(np.arange(n), treated)
    D = _design(Y, Z, v, first_treated)
    fits = [fit_one(Y, D, int(u), donors, first_treated) for u in treated]
    gaps = np.vstack([f.gap for f in fits])
    estimate = float(gaps[:, first_treated:].mean())
    plc = placebo_in_space(Y, treated, first_treated, fits, Z, v) if placebo else None
    se = float(np.std(plc.donor_effects, ddof=1)) if plc is not None else float("nan")
    # placebo SE of a mean over n_treated units: one placebo effect per unit, averaged
    se = se / np.sqrt(treated.size)
    q = st.norm.ppf(0.5 + confidence_level / 2)
    return SynthResult(
        estimate=estimate, se=se, ci_low=estimate - q * se, ci_high=estimate + q * se,
        weights=np.vstack([f.weights for f in fits]), gaps=gaps,
        pre_rmspe=np.array([f.pre_rmspe for f in fits]),
        post_rmspe=np.array([f.post_rmspe for f in fits]), donors=donors, placebo=plc,
        details={"n_donors": int(donors.size), "n_treated": int(treated.size),
                 "first_treated": int(first_treated), "n_periods": int(T),
                 "predictors": 0 if Z is None else int(Z.shape[1]),
                 "solver": "NNLS on the sum-to-one augmented system",
                 "se_type": "placebo in space (SD of donors' mean post gap)"})


def check_periods_and_balance(method: str, label: str, Y: np.ndarray, first_treated: int) -> None:
    """2+ pre-periods, 1+ post-period and no missing outcome (units x periods ``Y``)."""
    T = Y.shape[1]
    if not 2 <= first_treated < T:
        raise DataValidationError(f"{method}: needs at least 2 pre-periods and 1 post-period "
                                  f"(first treated period index {first_treated} of {T})")
    if not np.isfinite(Y).all():
        raise DataValidationError(f"{method}: the outcome has missing values; {label} needs "
                                  "a balanced panel")


def _validate(Y: np.ndarray, treated: np.ndarray, first_treated: int, max_treated: int,
              Z: np.ndarray | None, v: np.ndarray | None) -> None:
    """Clear errors before any fitting."""
    n = Y.shape[0]
    if treated.size == 0:
        raise DataValidationError("synthetic_control: no treated unit")
    if treated.size > max_treated:
        raise DataValidationError(f"synthetic_control: {treated.size} treated units exceed the limit "
                         f"max_treated={max_treated}; synthetic control is for a few treated "
                         "units (use callaway_santanna or synthetic_did)")
    if treated.min() < 0 or treated.max() >= n:
        raise DataValidationError("synthetic_control: treated unit index out of range")
    if n - treated.size < 3:
        raise DataValidationError("synthetic_control: needs at least 3 donor (never-treated) "
                                  "units for placebo inference")
    check_periods_and_balance("synthetic_control", "synthetic control", Y, first_treated)
    if Z is not None:
        if Z.shape[0] != n or not np.isfinite(Z).all():
            raise DataValidationError("synthetic_control: covariates must be finite, one row per unit")
        if v is not None and (len(v) != Z.shape[1] or np.any(np.asarray(v) < 0)):
            raise DataValidationError("synthetic_control: v needs one non-negative weight per "
                             "covariate")


def block_design(panel: PanelData, method: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(Y units x periods, treated unit codes, first treated period code) of a balanced panel
    whose treated units share one first treated period (less ``anticipation``)."""
    if panel.treatment_type != "binary":
        raise DataValidationError(f"config key 'method': {method} needs treatment_type binary")
    cohorts = panel.cohorts
    if cohorts.size != 1:
        raise DataValidationError(
            f"config key 'method': {method} needs all treated units to start in the same "
            f"period; the panel has {cohorts.size} cohorts (use callaway_santanna for "
            "staggered adoption)")
    Y = panel.wide("y")
    if np.isnan(Y).any():
        raise DataValidationError(f"config key 'method': {method} needs a balanced panel "
                                  f"({int(np.isnan(Y).sum())} unit x period cells missing)")
    return Y, np.flatnonzero(panel.cohort != NEVER), int(cohorts[0]) - panel.anticipation


def synth_design(panel: PanelData, settings: PanelSettings
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`block_design` of synthetic control, refusing more treated units than
    ``max_treated_units`` (before any per-unit work)."""
    Y, treated, first = block_design(panel, "synthetic_control")
    if treated.size > settings.max_treated_units:
        raise DataValidationError(
            f"config key 'method': synthetic_control takes at most "
            f"{settings.max_treated_units} treated units (max_treated_units); the panel has "
            f"{treated.size} (use callaway_santanna or synthetic_did)")
    return Y, treated, first


def _labels(values: np.ndarray) -> list[str]:
    return [str(v.date()) if isinstance(v, pd.Timestamp) else str(v)
            for v in pd.Index(values)]


def synthetic_control_panel(panel: PanelData, settings: PanelSettings) -> PanelResult:
    """``method: synthetic_control`` on a validated panel: donors are the never-treated
    units; time-invariant covariates (first row per unit) are matched beside the outcome."""
    Y, treated, first = synth_design(panel, settings)
    Z = panel.unit_values(panel.covariates) if panel.covariates is not None else None
    r = synthetic_control(Y, treated, first, max_treated=settings.max_treated_units, Z=Z,
                          confidence_level=settings.confidence_level)
    units, periods = _labels(panel.units), _labels(panel.periods)
    q = st.norm.ppf(0.5 + settings.confidence_level / 2)
    gap = r.gaps.mean(axis=0)
    band = q * r.placebo.donor_gaps.std(axis=0, ddof=1) / np.sqrt(treated.size)
    event = pd.DataFrame({"rel_period": np.arange(Y.shape[1]) - first, "estimate": gap,
                          "ci_low": gap - band, "ci_high": gap + band})
    names = [units[u] for u in treated]
    extra = {
        "donor_weights": {name: {units[d]: float(w) for d, w in zip(r.donors, row, strict=True)
                                 if w > 1e-6}
                          for name, row in zip(names, r.weights, strict=True)},
        "gaps": [{"period": p, "gap": float(g)} for p, g in zip(periods, gap, strict=True)],
        "pre_rmspe": dict(zip(names, r.pre_rmspe.tolist(), strict=True)),
        "post_rmspe": dict(zip(names, r.post_rmspe.tolist(), strict=True)),
        "placebo_p_value": r.placebo.p_value,
        "placebo_p_values": dict(zip(names, r.placebo.p_values.tolist(), strict=True)),
        **r.details}
    warnings = ["synthetic_control ignores spec key 'weights'"] if panel.weights is not None \
        else []
    return PanelResult(estimate=r.estimate, se=r.se, ci=(r.ci_low, r.ci_high),
                       method="synthetic_control", n_units=panel.n_units,
                       n_periods=panel.n_periods, confidence_level=settings.confidence_level,
                       event_study=event, extra=extra, warnings=warnings)


def leave_one_out(Y: np.ndarray, treated: np.ndarray, first_treated: int,
                  weights: np.ndarray, donors: np.ndarray, Z: np.ndarray | None = None,
                  ) -> dict[int, float]:
    """Estimate (mean post gap over treated units) with each donor that carries weight
    (> 1e-6 for any treated unit) dropped in turn: donor row index -> estimate."""
    used = donors[(weights > 1e-6).any(axis=0)]
    out = {}
    for j in used:
        keep = np.setdiff1d(np.arange(Y.shape[0]), [j])
        pos = {int(u): i for i, u in enumerate(keep)}
        Zk = None if Z is None else Z[keep]
        r = synthetic_control(Y[keep], [pos[int(u)] for u in treated], first_treated,
                              max_treated=treated.size, Z=Zk, placebo=False)
        out[int(j)] = r.estimate
    return out


def placebo_in_space_check(panel: PanelData, settings: PanelSettings
                           ) -> tuple[bool, dict, object]:
    """The panel check "placebo in space / leave-one-out" for synthetic control:
    (passed, metadata, figure). Passes when the treated units' RMSPE ratio ranks with
    p <= alpha among the donors' placebos and every leave-one-out estimate (each weighted
    donor dropped) keeps the estimate's sign. The figure: placebo gaps (grey) and the
    treated units' mean gap."""
    Y, treated, first = block_design(panel, "synthetic_control")
    Z = panel.unit_values(panel.covariates) if panel.covariates is not None else None
    r = synthetic_control(Y, treated, first, max_treated=settings.max_treated_units, Z=Z,
                          confidence_level=settings.confidence_level)
    loo = leave_one_out(Y, treated, first, r.weights, r.donors, Z)
    units = _labels(panel.units)
    stable = all(np.sign(v) == np.sign(r.estimate) for v in loo.values())
    p = r.placebo.p_value
    meta = {"placebo_p_value": p, "n_placebos": int(r.donors.size),
            "donor_ratios": {units[d]: float(x) for d, x in
                             zip(r.donors, r.placebo.donor_ratios, strict=True)},
            "leave_one_out": {units[j]: v for j, v in loo.items()},
            "leave_one_out_sign_stable": bool(stable),
            "rule": f"placebo-in-space p <= {settings.alpha:g} and every leave-one-out "
                    "estimate has the estimate's sign"}
    return bool(p <= settings.alpha and stable), meta, _placebo_figure(r, first)


def _placebo_figure(r: SynthResult, first: int):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    x = np.arange(r.gaps.shape[1]) - first
    for g in r.placebo.donor_gaps:
        ax.plot(x, g, color="0.8", lw=0.7)
    ax.plot(x, r.gaps.mean(axis=0), color="black", lw=1.8, label="treated")
    ax.axvline(-0.5, color="grey", ls="--", lw=0.8)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("periods since treatment")
    ax.set_ylabel("gap (treated - synthetic)")
    ax.set_title(f"placebo in space (p = {r.placebo.p_value:.3f})")
    ax.legend(loc="upper left")
    return fig
