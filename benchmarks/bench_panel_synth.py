"""Synthetic control (and synthetic DiD) against the peers on generated panels.

Cases (one RATIO line each, peer_s / ours_s):

* ``synthetic_control`` with placebo inference, 50 units x 30 periods (1 treated, 49
  donors; 50 simplex fits): ours vs pysyncon's own QP (``Synth.w_optimize``, SLSQP) on the
  same 50 fits (agree = same p-value, weights within 5e-3), and vs pysyncon's
  ``PlaceboTest`` (Dataprep + Synth with a fixed V, one worker; agree = p within 1/(n+1),
  its p-value's definition differs by the treated unit's own count).
* ``synthetic_control`` one fit on 500 donors: ours vs ``Synth.w_optimize``. pysyncon's
  SLSQP on 500 weights takes ~1 min per fit, so its placebo run (501 fits) is not timed;
  our own placebo run on 500 donors is printed as an INFO line.
* ``synthetic_did`` 50 units x 30 periods, 200 placebo draws: ours vs diff-diff's
  SyntheticDiD (Rust backend). agree = estimate and SE within 1e-6.

Usage: ``flock /tmp/e2i-heavy.lock python benchmarks/bench_panel_synth.py [--quick]``
(--quick skips the 500-donor cases, --large-only runs only them).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import pandas as pd

from e2i_pipelines.analytics.panel.sdid import synthetic_did
from e2i_pipelines.analytics.panel.synth import simplex_least_squares, synthetic_control


def panel(n_donors: int, T: int, T0: int, effect: float, seed: int = 0) -> np.ndarray:
    """Row 0 treated: a convex combination of 3 random-walk donors + noise + effect."""
    rng = np.random.default_rng(seed)
    donors = 10 + rng.normal(size=(n_donors, T)).cumsum(axis=1)
    treated = donors[:3].T @ np.array([0.5, 0.3, 0.2]) + rng.normal(scale=0.3, size=T)
    treated[T0:] += effect
    return np.vstack([treated, donors])


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def ratio(name: str, rows: int, ours: float, peer: str, peer_s: float, agree: bool) -> None:
    print(f"RATIO name={name} rows={rows} ours_s={ours:.3f} peer={peer} peer_s={peer_s:.3f} "
          f"ratio={peer_s / ours:.2f} agree={'yes' if agree else 'no'} "
          f"load1={os.getloadavg()[0]:.1f}", flush=True)


def pysyncon_qp_placebo(Y: np.ndarray, T0: int) -> tuple[np.ndarray, float]:
    """Treated weights and rank p-value from pysyncon's QP, every donor as a placebo."""
    from pysyncon import Synth

    def fit(u: int, donors: np.ndarray) -> tuple[np.ndarray, float]:
        W, _ = Synth.w_optimize(V_mat=np.eye(T0), X0=Y[donors, :T0].T, X1=Y[u, :T0])
        gap = Y[u] - W @ Y[donors]
        return W, np.sqrt(np.mean(gap[T0:] ** 2)) / np.sqrt(np.mean(gap[:T0] ** 2))

    donors = np.arange(1, Y.shape[0])
    w, own = fit(0, donors)
    ratios = [fit(int(j), np.delete(donors, i))[1] for i, j in enumerate(donors)]
    return w, (1 + sum(r >= own for r in ratios)) / (1 + donors.size)


def pysyncon_placebo_test(Y: np.ndarray, T0: int) -> float:
    """pysyncon's PlaceboTest end to end (fixed V = 1 on each pre-period outcome)."""
    from pysyncon import Dataprep, Synth
    from pysyncon.utils import PlaceboTest

    n, T = Y.shape
    df = pd.DataFrame({"unit": np.repeat([f"u{i}" for i in range(n)], T),
                       "time": np.tile(np.arange(T), n), "y": Y.ravel()})
    dp = Dataprep(foo=df, predictors=[], predictors_op="mean", dependent="y",
                  unit_variable="unit", time_variable="time", treatment_identifier="u0",
                  controls_identifier=[f"u{i}" for i in range(1, n)],
                  time_predictors_prior=range(T0), time_optimize_ssr=range(T0),
                  special_predictors=[("y", [t], "mean") for t in range(T0)])
    test = PlaceboTest()
    test.fit(dataprep=dp, scm=Synth(), scm_options={"custom_V": np.ones(T0)},
             max_workers=1, verbose=False)
    return float(test.pvalue(treatment_time=T0 - 1))


def sdid_case(n: int, T: int, T0: int, reps: int) -> None:
    from diff_diff import SyntheticDiD

    Y = panel(n - 1, T, T0, effect=2.0, seed=1)
    ours, s_ours = timed(synthetic_did, Y, [0], T0, replications=reps, seed=0)
    df = pd.DataFrame({"u": np.repeat(np.arange(n), T), "t": np.tile(np.arange(T), n),
                       "y": Y.ravel(), "treated": np.repeat((np.arange(n) == 0).astype(int), T)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref, s_ref = timed(SyntheticDiD(n_bootstrap=reps, seed=0).fit, df, outcome="y",
                           treatment="treated", unit="u", time="t",
                           post_periods=list(range(T0, T)))
    agree = abs(ours.estimate - ref.att) < 1e-6 and abs(ours.se - ref.se) < 1e-6
    ratio("synthetic_did", n * T, s_ours, "diff-diff", s_ref, agree)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the 500-donor cases")
    ap.add_argument("--large-only", action="store_true", help="only the 500-donor cases")
    args = ap.parse_args()
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.1f}")
    synthetic_control(panel(5, 12, 8, 1.0), [0], 8)  # warm imports
    synthetic_did(panel(9, 12, 8, 1.0), [0], 8, replications=2)  # numba compile / cache

    T, T0 = 30, 20
    if args.large_only:
        return large(T, T0)
    Y = panel(49, T, T0, effect=3.0)
    ours, s_ours = timed(synthetic_control, Y, [0], T0)
    (w_peer, p_peer), s_peer = timed(pysyncon_qp_placebo, Y, T0)
    agree = (np.abs(ours.weights[0] - w_peer).max() < 5e-3
             and abs(ours.placebo.p_value - p_peer) < 1e-12)
    ratio("synthetic_control_placebo", 50 * T, s_ours, "pysyncon.w_optimize", s_peer, agree)
    p_test, s_test = timed(pysyncon_placebo_test, Y, T0)
    # PlaceboTest scales each predictor row by its SD (slightly different weights), counts
    # the treated unit only in the p-value's denominator and period T0 in both RMSPEs: its
    # p is ours minus up to 1/(n+1)
    ratio("synthetic_control_placebo", 50 * T, s_ours, "pysyncon.PlaceboTest", s_test,
          abs(ours.placebo.p_value - p_test) <= 1 / 50 + 1e-12)

    sdid_case(50, T, T0, reps=200)

    if not args.quick:
        large(T, T0)


def large(T: int, T0: int) -> None:
    """One fit on 500 donors vs pysyncon; our placebo run on 500 donors alone."""
    Y = panel(500, T, T0, effect=3.0, seed=2)
    A, b = Y[1:, :T0].T, Y[0, :T0]
    w, s_ours = timed(simplex_least_squares, A, b)
    from pysyncon import Synth

    (W, _), s_peer = timed(Synth.w_optimize, V_mat=np.eye(T0), X0=A, X1=b)
    loss = lambda v: float(np.sum((A @ v - b) ** 2))  # noqa: E731
    agree = np.abs(w - W).max() < 5e-3 and loss(w) <= loss(W) * (1 + 1e-9)
    ratio("synthetic_control_fit_500_donors", 501 * T, s_ours, "pysyncon.w_optimize", s_peer,
          agree)
    full, s_full = timed(synthetic_control, Y, [0], T0)
    print(f"INFO name=synthetic_control_placebo_500_donors rows={501 * T} ours_s={s_full:.2f} "
          f"p={full.placebo.p_value:.4f} load1={os.getloadavg()[0]:.1f} (pysyncon: one fit "
          f"above x 501 fits, not run)")


if __name__ == "__main__":
    main()
