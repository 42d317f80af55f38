"""Synthetic difference-in-differences (Arkhangelsky, Athey, Hirshberg, Imbens & Wager 2021).

The algorithm of R's ``synthdid`` (``synthdid_estimate`` with its defaults):

* noise level ``sigma`` = SD of the controls' first differences over the pre-periods;
  ``zeta_omega = (N1 * T1)^(1/4) * sigma``, ``zeta_lambda = 1e-6 * sigma``;
* unit weights ``omega`` and time weights ``lambda`` by Frank-Wolfe on the simplex with an
  intercept (column-centred) and the ridge term ``zeta^2 ||w||^2``: 100 iterations, sparsify
  (weights <= max/4 set to 0), then up to 10,000 more, stopping when the objective falls by
  less than ``(1e-5 * sigma)^2``;
* ``tau = (Ybar_tr,post - lambda' Y_tr,pre) - omega' (Ybar_co,post - lambda' Y_co,pre)``;
* placebo variance (Algorithm 4): controls permuted, the last N1 become pseudo-treated,
  both weights refitted (warm-started from the fit's weights), ``se = sqrt((r-1)/r) sd``.

Outcomes are centred and scaled by the controls' pre-period mean and SD first (the estimate
is location-invariant and scale-equivariant), as diff-diff does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.stats as st
from numba import njit

from e2i_pipelines.analytics.panel.data import PanelData
from e2i_pipelines.analytics.panel.result import PanelResult
from e2i_pipelines.analytics.panel.settings import PanelSettings
from e2i_pipelines.analytics.panel.synth import _labels, block_design, check_periods_and_balance
from e2i_pipelines.core.errors import DataValidationError


@dataclass
class SDIDResult:
    """Synthetic DiD estimate, weights and placebo SE."""

    estimate: float
    se: float
    ci_low: float
    ci_high: float
    unit_weights: np.ndarray  # (n_controls,)
    time_weights: np.ndarray  # (n_pre,)
    controls: np.ndarray  # control row indices into Y
    placebo_effects: np.ndarray
    details: dict = field(default_factory=dict)


@njit(cache=True)
def _fw_loop(A: np.ndarray, b: np.ndarray, lam: np.ndarray, zeta: float,
             min_decrease: float, max_iter: int) -> np.ndarray:  # pragma: no cover (numba)
    """Frank-Wolfe on the simplex for ``min ||A x - b||^2 / n + zeta^2 ||x||^2`` (R's
    ``fw.step`` loop), stopping when the objective falls by less than ``min_decrease^2``.
    ``A x`` and ``A'A x`` are updated along the step (O(n + k) per iteration instead of
    O(n k)); the loop runs up to 10,000 times per fit."""
    n, k = A.shape
    eta = n * zeta * zeta
    G = A.T @ A
    Atb = A.T @ b
    lam = lam.copy()
    Ax = A @ lam
    Glam = G @ lam
    hg = np.empty(k)
    prev = np.inf
    for _ in range(max_iter):
        i = 0
        for j in range(k):  # half gradient A'(A lam - b) + eta lam, and its argmin
            hg[j] = Glam[j] - Atb[j] + eta * lam[j]
            if hg[j] < hg[i]:
                i = j
        moved = 1.0 - lam[i] > 1e-8
        for j in range(k):
            if j != i and lam[j] > 1e-8:
                moved = True
        if moved:
            derr2, dx2, hgd = 0.0, 0.0, 0.0
            for row in range(n):  # A d = A[:, i] - A lam
                de = A[row, i] - Ax[row]
                derr2 += de * de
            for j in range(k):
                dj = (1.0 if j == i else 0.0) - lam[j]
                dx2 += dj * dj
                hgd += hg[j] * dj
            denom = derr2 + eta * dx2
            if denom > 0:
                step = min(1.0, max(0.0, -hgd / denom))
                for j in range(k):
                    lam[j] += step * ((1.0 if j == i else 0.0) - lam[j])
                    Glam[j] += step * (G[j, i] - Glam[j])
                for row in range(n):
                    Ax[row] += step * (A[row, i] - Ax[row])
        val, ll = 0.0, 0.0
        for row in range(n):
            val += (Ax[row] - b[row]) ** 2
        for j in range(k):
            ll += lam[j] * lam[j]
        val = zeta * zeta * ll + val / n
        if prev - val < min_decrease * min_decrease:
            break
        prev = val
    return lam


def fw_weights(Y: np.ndarray, zeta: float, init: np.ndarray | None, min_decrease: float,
               max_iter: int) -> np.ndarray:
    """R's ``sc.weight.fw`` with intercept: weights on the columns of ``Y[:, :-1]`` that
    match ``Y[:, -1]`` (rows centred)."""
    Y = Y - Y.mean(axis=0)
    k = Y.shape[1] - 1
    if k <= 1:
        return np.ones(max(k, 1))
    A = np.ascontiguousarray(Y[:, :k])
    lam = np.full(k, 1.0 / k) if init is None else np.asarray(init, dtype=np.float64)
    return _fw_loop(A, np.ascontiguousarray(Y[:, k]), lam, float(zeta), float(min_decrease),
                    int(max_iter))


def _sparsify(v: np.ndarray) -> np.ndarray:
    v = v.copy()
    if v.max() <= 0:
        return np.full(v.size, 1.0 / v.size)
    v[v <= v.max() / 4] = 0.0
    return v / v.sum()


def two_pass(Y: np.ndarray, zeta: float, init: np.ndarray | None,
             min_decrease: float) -> np.ndarray:
    """100 Frank-Wolfe iterations, sparsify, then up to 10,000 (synthdid's defaults)."""
    if Y.shape[1] - 1 == 1:
        return np.ones(1)
    w = fw_weights(Y, zeta, init, min_decrease, 100)
    return fw_weights(Y, zeta, _sparsify(w), min_decrease, 10_000)


def _weights(pre_co: np.ndarray, post_co: np.ndarray, pre_tr: np.ndarray, zeta_omega: float,
             zeta_lambda: float, min_decrease: float, init_omega: np.ndarray | None = None,
             init_lambda: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(omega, lambda) for controls ``pre_co`` (T0 x N0), ``post_co`` and treated mean."""
    omega = two_pass(np.column_stack([pre_co, pre_tr]), zeta_omega, init_omega, min_decrease)
    lam = two_pass(np.column_stack([pre_co.T, post_co.mean(axis=0)]), zeta_lambda,
                   init_lambda, min_decrease)
    return omega, lam


def _tau(pre_co, post_co, pre_tr, post_tr, omega, lam) -> float:
    return float((post_tr.mean() - lam @ pre_tr)
                 - omega @ (post_co.mean(axis=0) - lam @ pre_co))


def synthetic_did(Y: np.ndarray, treated: np.ndarray | list[int], first_treated: int, *,
                  replications: int = 200, seed: int = 0,
                  confidence_level: float = 0.95) -> SDIDResult:
    """SDID for ``treated`` rows of ``Y`` (units x periods), treated from column
    ``first_treated`` on (block adoption); all other rows are controls."""
    Y = np.asarray(Y, dtype=np.float64)
    treated = np.unique(np.asarray(treated, dtype=np.int64))
    _validate(Y, treated, first_treated)
    controls = np.setdiff1d(np.arange(Y.shape[0]), treated)
    pre_co = Y[controls, :first_treated].T  # (T0, N0)
    shift, scale = float(pre_co.mean()), float(pre_co.std())
    if not np.isfinite(scale) or scale <= 1e-12 * max(abs(shift), 1.0):
        scale = 1.0
    Yn = (Y - shift) / scale
    pre_co, post_co = Yn[controls, :first_treated].T, Yn[controls, first_treated:].T
    pre_tr = Yn[treated, :first_treated].mean(axis=0)
    post_tr = Yn[treated, first_treated:].mean(axis=0)
    n1, t1 = treated.size, Y.shape[1] - first_treated
    diffs = np.diff(pre_co, axis=0)
    sigma = float(np.std(diffs, ddof=1)) if diffs.size > 1 else 0.0
    zeta_omega, zeta_lambda = (n1 * t1) ** 0.25 * sigma, 1e-6 * sigma
    min_decrease = 1e-5 * sigma if sigma > 0 else 1e-5
    omega, lam = _weights(pre_co, post_co, pre_tr, zeta_omega, zeta_lambda, min_decrease)
    tau = _tau(pre_co, post_co, pre_tr, post_tr, omega, lam)
    effects = _placebo(pre_co, post_co, n1, zeta_omega, zeta_lambda, min_decrease, omega,
                       lam, replications, seed)
    r = effects.size
    se = float(np.sqrt((r - 1) / r) * np.std(effects, ddof=1)) if r >= 2 else float("nan")
    q = st.norm.ppf(0.5 + confidence_level / 2)
    est, se = tau * scale, se * scale
    return SDIDResult(est, se, est - q * se, est + q * se, omega, lam, controls,
                      effects * scale,
                      details={"zeta_omega": zeta_omega * scale,
                               "zeta_lambda": zeta_lambda * scale,
                               "noise_level": sigma * scale, "replications": r,
                               "n_controls": int(controls.size), "n_treated": int(n1),
                               "se_type": "placebo (Arkhangelsky et al. 2021, Algorithm 4)"})


def _placebo(pre_co: np.ndarray, post_co: np.ndarray, n1: int, zeta_omega: float,
             zeta_lambda: float, min_decrease: float, omega: np.ndarray, lam: np.ndarray,
             replications: int, seed: int) -> np.ndarray:
    """Placebo estimates: permuted controls, last ``n1`` pseudo-treated, weights refitted."""
    n0 = pre_co.shape[1]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(replications):
        perm = rng.permutation(n0)
        co, tr = perm[:n0 - n1], perm[n0 - n1:]
        init = omega[co] / omega[co].sum() if omega[co].sum() > 0 else None
        o, lm = _weights(pre_co[:, co], post_co[:, co], pre_co[:, tr].mean(axis=1),
                         zeta_omega, zeta_lambda, min_decrease, init, lam)
        t = _tau(pre_co[:, co], post_co[:, co], pre_co[:, tr].mean(axis=1),
                 post_co[:, tr].mean(axis=1), o, lm)
        if np.isfinite(t):
            out.append(t)
    return np.asarray(out)


def _validate(Y: np.ndarray, treated: np.ndarray, first_treated: int) -> None:
    n = Y.shape[0]
    if treated.size == 0 or treated.min() < 0 or treated.max() >= n:
        raise DataValidationError("synthetic_did: treated unit indices missing or out of range")
    if n - treated.size <= treated.size:
        raise DataValidationError("synthetic_did: the placebo variance needs more control units "
                         f"({n - treated.size}) than treated units ({treated.size})")
    check_periods_and_balance("synthetic_did", "synthetic DiD", Y, first_treated)


PLACEBO_REPLICATIONS = 200
"""R synthdid's default number of placebo draws (capped by ``n_bootstrap``)."""


def synthetic_did_panel(panel: PanelData, settings: PanelSettings) -> PanelResult:
    """``method: synthetic_did`` on a validated panel (block adoption, never-treated
    controls, placebo SE with min(n_bootstrap, 200) draws)."""
    Y, treated, first = block_design(panel, "synthetic_did")
    reps = min(settings.n_bootstrap, PLACEBO_REPLICATIONS)
    r = synthetic_did(Y, treated, first, replications=reps, seed=settings.seed,
                      confidence_level=settings.confidence_level)
    units, periods = _labels(panel.units), _labels(panel.periods)
    extra = {"unit_weights": {units[c]: float(w) for c, w in zip(r.controls, r.unit_weights, strict=True)
                              if w > 1e-6},
             "time_weights": {periods[t]: float(w) for t, w in enumerate(r.time_weights)
                              if w > 1e-6},
             **r.details}
    warnings = ["synthetic_did ignores spec key 'weights'"] if panel.weights is not None \
        else []
    return PanelResult(estimate=r.estimate, se=r.se, ci=(r.ci_low, r.ci_high),
                       method="synthetic_did", n_units=panel.n_units,
                       n_periods=panel.n_periods, confidence_level=settings.confidence_level,
                       extra=extra, warnings=warnings)
