"""Panel estimators against the peers on generated staggered panels (issue 28).

Cases (one RATIO line per comparison, ratio = peer_s / ours_s):

* ``callaway_santanna`` doubly robust with one covariate, ATT(g,t) + the simple aggregation,
  on ``--cs-units`` units x 10 periods (default 100k = 1M rows): ours vs csdid
  (``ATTgt.fit(est_method="dr", bstrap=False)`` + ``aggte("simple")``; agree = every ATT(g,t)
  and the overall ATT within 1e-6), diff-diff ``CallawaySantAnna(estimation_method="dr")``
  with and without the covariate (agree = overall ATT within 1e-6; its covariate DR variant
  differs from R did's, so only the covariate-free run agrees) and DoubleML ``DoubleMLDIDMulti`` with linear/logistic
  learners (timed on ``--dml-units`` units and extrapolated linearly; agree = overall within
  1e-6, which a cross-fitted estimator is not expected to meet).
* ``did`` (TWFE, unit + time effects absorbed, CR1 by unit) on ``--twfe-units`` x 20 periods:
  ours vs pyfixest ``feols("y ~ d | unit + time", vcov={"CRV1": "unit"})``; agree = estimate
  and SE within 1e-8.

Same estimator on both sides of each CS ratio: control group never-treated, varying base
period, doubly robust, no bootstrap (csdid ``bstrap=False``, diff-diff's default
``n_bootstrap=0``); each side returns every ATT(g,t) with its SE and the overall ATT with its
SE (ours: ``load_panel`` + ``att_gt`` + the simple aggregation + the SEs from the influence
functions). :func:`warm_up` imports the peers and loads our compiled kernels in the parent
first and prints those one-off costs, which are then in no timing.

Each timed call runs in a forked child, so its peak RSS is its own (``peak_mb``). The 1-min
load average is printed beside the numbers. ``INFO`` lines split our time into ``load_panel``
(validation and codes from the frame) and estimation, and time the full CS result (all
aggregations and the bootstrap bands), which no peer is timed on. Part B's synthetic-control cases live in
``bench_panel_synth.py``; further cases are added to :data:`CASES`.

Usage: ``flock /tmp/e2i-heavy.lock python benchmarks/bench_panel.py [--quick] [--repeat N]
[--peers full csdid diff-diff-covariate diff-diff]`` (``--peers diff-diff --cases cs_case
--dml-units 0``: only the like-for-like diff-diff comparison, a few seconds at 1M rows)
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing as mp
import os
import resource
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2i_pipelines.analytics.panel.callaway_santanna import (  # noqa: E402
    aggregate,
    att_gt,
    callaway_santanna,
)
from e2i_pipelines.analytics.panel.data import load_panel  # noqa: E402
from e2i_pipelines.analytics.panel.settings import PanelSettings  # noqa: E402
from e2i_pipelines.analytics.panel.twfe import did  # noqa: E402
from e2i_pipelines.core.spec import spec_from_mapping  # noqa: E402
from tests.panel.generated import staggered  # noqa: E402

_JOB: dict[str, Any] = {}


def _child(_: int) -> tuple[float, Any, float]:
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    out = _JOB["fn"]()
    wall = time.perf_counter() - start
    return wall, out, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any]) -> tuple[float, Any, float]:
    """(seconds, result, peak RSS MiB) of ``fn()`` in a forked child; with ``--repeat N``
    the fastest of N children (each a fresh fork) and the largest peak."""
    _JOB["fn"] = fn
    runs = []
    for _ in range(_JOB.get("repeat", 1)):
        with mp.get_context("fork").Pool(1) as pool:
            runs.append(pool.map(_child, [0])[0])
    return min(r[0] for r in runs), runs[0][1], max(r[2] for r in runs)


def ratio(name: str, rows: int, ours: float, peer: str, peer_s: float, agree: bool,
          note: str = "") -> None:
    print(f"RATIO name={name} rows={rows} ours_s={ours:.3f} peer={peer} peer_s={peer_s:.3f} "
          f"ratio={peer_s / ours:.2f} agree={'yes' if agree else 'no'}{note}", flush=True)


def _spec(**extra):
    return spec_from_mapping({"treatment": "d", "outcome": "y", "design": "panel",
                              "unit": "unit", "time": "time", **extra})


def _ours_simple(panel) -> tuple[np.ndarray, float, float, np.ndarray]:
    """What the peers compute: ATT(g,t) with SEs, the simple aggregation with its SE."""
    cells = att_gt(panel, "dr")
    overall, inf, _, _ = aggregate(cells, "simple")
    return cells.att, overall, float(cells.se(inf)[0]), cells.se(cells.inf)


def warm_up(args: argparse.Namespace) -> None:
    """One-off costs out of the timings: our compiled kernels loaded (numba) and the peers
    imported in the parent, so each forked child times steady-state work. Both printed."""
    tiny = staggered(n_units=300, n_periods=10, cohorts=(4, 6, 8), seed=0).df

    def first_call():
        return _ours_simple(load_panel(tiny, _spec(covariates=["x"])))[1]

    cold_s, _, _ = timed(first_call)
    first_call()
    parts = [f"ours_first_call_s={cold_s:.3f}"]
    peers = ["csdid.att_gt", "diff_diff", "pyfixest"] + (["doubleml"] if args.dml_units else [])
    for module in peers:
        start = time.perf_counter()
        importlib.import_module(module)
        parts.append(f"{module.split('.')[0]}_import_s={time.perf_counter() - start:.3f}")
    print(f"INFO warm_up {' '.join(parts)} (excluded from every timing below)", flush=True)


def cs_case(args: argparse.Namespace) -> None:
    """Callaway-Sant'Anna dr vs csdid, diff-diff and DoubleMLDIDMulti."""
    df = staggered(n_units=args.cs_units, n_periods=10, cohorts=(4, 6, 8), seed=0).df
    rows = len(df)
    spec = _spec(covariates=["x"])

    def ours():
        start = time.perf_counter()
        panel = load_panel(df, spec)
        loaded = time.perf_counter()
        att, overall, _, _ = _ours_simple(panel)
        return att, overall, loaded - start

    ours_s, (att, overall, load_s), ours_mb = timed(ours)
    print(f"INFO callaway_santanna ours rows={rows} s={ours_s:.3f} load_panel_s={load_s:.3f} "
          f"estimate_s={ours_s - load_s:.3f} peak_mb={ours_mb:.0f} cells={len(att)} "
          f"overall={overall:.6f}", flush=True)

    def ours_full():  # the job's result: every aggregation and the 999-draw uniform bands
        return callaway_santanna(load_panel(df, spec), PanelSettings()).estimate

    if "full" in args.peers:
        full_s, _, full_mb = timed(ours_full)
        print(f"INFO callaway_santanna ours_full_result rows={rows} s={full_s:.3f} "
              f"peak_mb={full_mb:.0f} (att_gt, 4 aggregations, SEs, bands by "
              f"{PanelSettings().n_bootstrap} multiplier-bootstrap draws)", flush=True)

    def csdid_fit():
        from csdid.att_gt import ATTgt

        fit = ATTgt(yname="y", tname="time", idname="unit", gname="g", data=df,
                    control_group=["nevertreated"], xformla="y~x").fit(
            est_method="dr", bstrap=False)
        agg = fit.aggte(typec="simple", bstrap=False, cband=False).atte["overall_att"]
        return np.asarray(fit.results["att"]), float(agg)

    if "csdid" in args.peers:
        s, (ref_att, ref_overall), mb = timed(csdid_fit)
        agree = len(ref_att) == len(att) and np.max(np.abs(ref_att - att)) < 1e-6 \
            and abs(ref_overall - overall) < 1e-6
        ratio("callaway_santanna", rows, ours_s, "csdid", s, agree, f" peer_mb={mb:.0f} "
              f"ours_mb={ours_mb:.0f}")
    if "diff-diff-covariate" in args.peers:
        diff_diff_ratio(df, ["x"], ours_s, overall)
    if "diff-diff" in args.peers:
        diff_diff_ratio(df, [], *_ours_no_covariates(df))
    if args.dml_units:
        dml_case(args, ours_s, rows)


def _ours_no_covariates(df) -> tuple[float, float]:
    s, overall, mb = timed(lambda: _ours_simple(load_panel(df, _spec()))[1])
    print(f"INFO callaway_santanna ours covariates=none rows={len(df)} s={s:.3f} "
          f"peak_mb={mb:.0f} overall={overall:.6f}", flush=True)
    return s, overall


def diff_diff_ratio(df, covariates: list[str], ours_s: float, overall: float) -> None:
    """diff-diff's CallawaySantAnna (dr) with and without the covariate: its covariate DR
    variant differs from R did/csdid, so only the covariate-free run is expected to agree."""
    def fit():
        from diff_diff import CallawaySantAnna

        return float(CallawaySantAnna(control_group="never_treated", estimation_method="dr")
                     .fit(df, outcome="y", unit="unit", time="time", first_treat="g",
                          covariates=covariates or None).overall_att)

    s, ref_overall, mb = timed(fit)
    ratio("callaway_santanna", len(df), ours_s, "diff-diff", s,
          abs(ref_overall - overall) < 1e-6, f" covariates={covariates or 'none'} "
          f"peer_mb={mb:.0f} diff={ref_overall - overall:.2e}")


def dml_case(args: argparse.Namespace, ours_s: float, rows: int) -> None:
    """DoubleMLDIDMulti on a subsample, extrapolated linearly to ``rows``; the estimates are
    compared with ours on the same subsample."""
    sub = staggered(n_units=args.dml_units, n_periods=10, cohorts=(4, 6, 8), seed=0).df
    ours_group = aggregate(att_gt(load_panel(sub, _spec(covariates=["x"])), "dr"), "group")[0]
    sub["g"] = sub["g"].astype(float).where(sub["g"] > 0, np.inf)

    def fit():
        import doubleml as dml
        from doubleml.data import DoubleMLPanelData
        from sklearn.linear_model import LinearRegression, LogisticRegression

        data = DoubleMLPanelData(sub, y_col="y", d_cols="g", id_col="unit", t_col="time",
                                 x_cols=["x"])
        model = dml.did.DoubleMLDIDMulti(data, ml_g=LinearRegression(),
                                         ml_m=LogisticRegression(), control_group="never_treated",
                                         n_folds=5)
        model.fit()
        return float(model.aggregate("group").overall_aggregated_framework.thetas[0])

    s, theta, mb = timed(fit)
    scale = rows / len(sub)
    ratio("callaway_santanna", rows, ours_s, "doubleml-DIDMulti", s * scale,
          abs(theta - ours_group) < 1e-6,
          f" extrapolated_from_rows={len(sub)} peer_mb={mb:.0f} "
          f"group_overall_diff={theta - ours_group:.2e}")


def twfe_case(args: argparse.Namespace) -> None:
    """TWFE with absorbed effects and CR1 vs pyfixest feols."""
    df = staggered(n_units=args.twfe_units, n_periods=20, cohorts=(6, 10, 14), covariate=False,
                   seed=1).df[["unit", "time", "d", "y"]]
    rows = len(df)
    settings = PanelSettings(wild_cluster_threshold=0)

    def ours():
        start = time.perf_counter()
        panel = load_panel(df, _spec())
        loaded = time.perf_counter()
        res = did(panel, settings)
        return res.estimate, res.se, loaded - start

    ours_s, (est, se, load_s), ours_mb = timed(ours)
    print(f"INFO did ours rows={rows} s={ours_s:.3f} load_panel_s={load_s:.3f} "
          f"estimate_s={ours_s - load_s:.3f} peak_mb={ours_mb:.0f}", flush=True)

    def pyfixest_fit():
        import pyfixest as pf

        fit = pf.feols("y ~ d | unit + time", data=df, vcov={"CRV1": "unit"})
        return float(fit.coef()["d"]), float(fit.se()["d"])

    s, (ref_est, ref_se), mb = timed(pyfixest_fit)
    ratio("did", rows, ours_s, "pyfixest", s,
          abs(ref_est - est) < 1e-8 and abs(ref_se - se) < 1e-8,
          f" peer_mb={mb:.0f} ours_mb={ours_mb:.0f}")


CS_PEERS = ("full", "csdid", "diff-diff-covariate", "diff-diff")
"""cs_case's comparisons, all by default (DoubleML by ``--dml-units``)."""

CASES: list[Callable[[argparse.Namespace], None]] = [cs_case, twfe_case]
"""Benchmark cases, run in order (append new panel estimators here)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cs-units", type=int, default=100_000)
    parser.add_argument("--dml-units", type=int, default=10_000,
                        help="DoubleMLDIDMulti subsample (0 skips it)")
    parser.add_argument("--twfe-units", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10k units everywhere")
    parser.add_argument("--peers", nargs="*", default=list(CS_PEERS), choices=CS_PEERS,
                        help="cs_case's comparisons (full = our job's whole result, no peer)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="time each call in N fresh children, report the fastest")
    parser.add_argument("--cases", nargs="*", default=None,
                        help=f"run only these of {[c.__name__ for c in CASES]}")
    args = parser.parse_args()
    if args.quick:
        args.cs_units, args.dml_units, args.twfe_units = 10_000, 2_000, 10_000
    print(f"LOAD loadavg_1min={os.getloadavg()[0]:.2f} cpus={os.cpu_count()} "
          f"repeat={args.repeat}", flush=True)
    warm_up(args)
    _JOB["repeat"] = args.repeat
    for case in CASES:
        if args.cases is None or case.__name__ in args.cases:
            case(args)
    print(f"LOAD loadavg_1min={os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
