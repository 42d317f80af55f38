"""Effect estimators: ours vs the stock library call, same data with a known effect, same run.

Data (seeded, regenerated identically in every child): n rows x 30 covariates (x00-x24
Gaussian, the first ten sharing a common factor; x25-x29 binary), a binary treatment whose
logit is a bounded nonlinear function of x00-x04 and x25 (true propensity in [0.12, 0.88]),
an outcome with nonlinear confounding through the same covariates plus prognostic-only ones,
and a constant true effect of 2.0 (so ATE = 2.0). Difference in means, linear regression and
the (linear-logit) weighting estimator are biased here by design; AIPW and DML with LightGBM
nuisances should recover 2.0. The comparison is ours against stock, not against the truth.

Pairs (ours | stock):
  * difference_in_means | statsmodels ``OLS(y, [1, T]).fit(cov_type="HC2")`` (identical
    estimator: estimate and SE should match to ~1e-10).
  * linear_regression (``estimate_effect(frame, "linear_regression")``: DoWhy's backdoor
    linear regression) | statsmodels ``OLS(y, [1, T, X]).fit()`` (the same coefficient/SE).
  * propensity_score_weighting (unpenalised logistic MLE by IRLS, stabilised Hajek weights,
    no trimming, M-estimation SE) | DoWhy ``backdoor.propensity_score_weighting`` with
    ``weighting_scheme="ips_stabilized_weight"`` and its default propensity model, sklearn
    ``LogisticRegression()`` (L2-penalised, C=1, lbfgs, max_iter=100). DoWhy clips the
    propensity to [0.05, 0.95] by default; we pass ``min_ps_score=0, max_ps_score=1`` so both
    sides compute the same (unclipped) estimator. Identification uses DoWhy's
    "maximal-adjustment" (as our linear regression does; its default enumerates adjustment
    sets, ~50 s for 30 covariates). DoWhy's point estimate is timed alone; its
    SE/CI come from ``--dowhy-bootstrap`` bootstrap refits (timed separately, not in the
    ratio; 0 = no stock CI).
  * aipw (LightGBM nuisances, 5 stratified folds, 100 trees) | DoubleML ``DoubleMLIRM``
    (score "ATE", the same LightGBM learners/params, n_folds=5, its own random folds,
    ``trimming_threshold=0.01`` = our propensity clip).
  * dml (our DoubleMLPLR wrapper) | EconML ``LinearDML`` (model_y LGBMRegressor, model_t
    LGBMClassifier, discrete_treatment=True, cv=5, the same LightGBM params; W = covariates).

Our side is built as the asset builds it: ``prepare_frame(df, spec)`` (spec with the 30 common
causes) then ``estimate_effect(frame, method, settings=EstimatorSettings(n_jobs=2))``; frame
preparation is included in our seconds (and shown separately as "prep"). The stock side's
seconds include building its inputs from the same DataFrame. LightGBM n_jobs=2 on both sides.
Each side runs in a fresh spawned process that imports every library of both sides before
its timer starts (peak RSS = its VmHWM, libraries and data generation included; "base" = RSS
after generating the DataFrame). CPU s = user+sys of that process, all threads. Both sides
run with OMP_WAIT_POLICY=PASSIVE by default: with spinning OpenMP threads, LightGBM with
n_jobs=2 on a 2-core machine that also runs other work took 48 s instead of 3 s for one fit.

Agreement rule: agree = |ours - stock| < 2 x max(SE ours, SE stock) (SE stock where the
library gives one, else ours alone).

    python benchmarks/bench_estimators.py                          # 100k and 1M, all pairs
    python benchmarks/bench_estimators.py --rows 20000 --methods aipw dml
    python benchmarks/bench_estimators.py --rows 1000000 --stock-max-rows 200000

With ``--stock-max-rows N`` a stock side runs on the first N rows only, its seconds are
extrapolated linearly to the full size and marked with * (its estimate is then the N-row one).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from memory import peak_rss_mb as _peak_rss_mb  # noqa: E402 - benchmarks/ is on sys.path

N_COV, TRUE_EFFECT, SEED = 30, 2.0, 7
COLS = [f"x{i:02d}" for i in range(N_COV)]
METHODS = ("difference_in_means", "linear_regression", "propensity_score_weighting", "aipw",
           "dml")
STOCK = {
    "difference_in_means": "statsmodels OLS y~1+T HC2",
    "linear_regression": "statsmodels OLS y~1+T+X",
    "propensity_score_weighting": "DoWhy PSW ips_stabilized",
    "aipw": "DoubleML DoubleMLIRM ATE",
    "dml": "EconML LinearDML",
}
AGREE_SE = 2.0


def make_frame(n: int, seed: int = SEED):
    """The benchmark DataFrame: x00..x29, ``treated`` (0/1 int), ``y``; true effect 2.0."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, N_COV))
    X[:, :10] += 0.4 * X[:, [10]]  # correlated block through a shared factor
    X[:, 25:] = X[:, 25:] > 0.3  # five binary covariates
    x = [X[:, j] for j in range(6)]
    x25 = X[:, 25]
    score = (0.9 * x[0] - 0.7 * (x[1] ** 2 - 1) + 0.8 * np.sin(2 * x[2]) + 0.6 * x[3] * x[4]
             + 0.5 * x25 - 0.2)
    logit = 2.0 * np.tanh(score / 2)  # bounded: true propensity in [0.12, 0.88]
    t = rng.random(n) < 1 / (1 + np.exp(-logit))
    y = (TRUE_EFFECT * t + 1.5 * x[0] + x[1] ** 2 + 1.5 * np.sin(2 * x[2]) + 0.8 * x[3] * x[4]
         + 0.7 * x25 + 0.5 * x[0] * x[1] + 0.5 * x[5] + 0.5 * np.abs(X[:, 6])
         + 0.3 * X[:, 7:10].sum(axis=1) + rng.standard_normal(n))
    df = pd.DataFrame(X, columns=COLS, copy=False)
    df["treated"] = t.astype(np.int64)
    df["y"] = y
    return df


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024**2


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _quiet() -> None:
    import logging

    warnings.filterwarnings("ignore")
    for name in ("dowhy", "doubleml", "econml"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _warm_imports() -> None:
    """Import every library either side uses before any timing (both sides alike)."""
    import doubleml  # noqa: F401
    import dowhy  # noqa: F401
    import econml.dml  # noqa: F401
    import lightgbm  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import statsmodels.api  # noqa: F401

    import e2i_pipelines.analytics.causal.estimate  # noqa: F401


def run_ours(method: str, n: int, n_jobs: int) -> dict:
    """Child: prepare_frame + estimate_effect, as the asset does it."""
    _quiet()
    _warm_imports()
    from e2i_pipelines.analytics.causal.estimate import estimate_effect, prepare_frame
    from e2i_pipelines.analytics.causal.estimators import EstimatorSettings
    from e2i_pipelines.core.spec import CausalSpec

    df = make_frame(n)
    base = _rss_mb()
    spec = CausalSpec(treatment="treated", outcome="y", common_causes=list(COLS))
    settings = EstimatorSettings(n_jobs=n_jobs)
    started, cpu = time.perf_counter(), _cpu()
    frame = prepare_frame(df, spec)
    prep = time.perf_counter() - started
    result, _fit, _ = estimate_effect(frame, method, settings=settings)
    seconds, cpu = time.perf_counter() - started, _cpu() - cpu
    return {"seconds": seconds, "prep_seconds": prep, "cpu": cpu, "rows_used": n,
            "estimate": result.estimate, "se": result.std_error, "ci": [result.ci_low,
                                                                         result.ci_high],
            "base_rss_mb": base, "peak_rss_mb": _peak_rss_mb(), "details": result.details}


def _lgb(n_jobs: int):
    """The LightGBM learners our estimators use (same params, n_jobs)."""
    import lightgbm as lgb

    from e2i_pipelines.analytics.causal.estimators import EstimatorSettings, _lgb_params

    params = _lgb_params(EstimatorSettings(n_jobs=n_jobs))
    return lgb.LGBMRegressor(**params), lgb.LGBMClassifier(**params), params


def _stock_dim(df, n_jobs: int, bootstrap: int) -> dict:
    import statsmodels.api as sm

    t = df["treated"].to_numpy(dtype=np.float64)
    design = np.column_stack([np.ones_like(t), t])
    res = sm.OLS(df["y"].to_numpy(dtype=np.float64), design).fit(cov_type="HC2")
    low, high = res.conf_int(0.05)[1]
    return {"estimate": float(res.params[1]), "se": float(res.bse[1]), "ci": [low, high]}


def _stock_linear(df, n_jobs: int, bootstrap: int) -> dict:
    import statsmodels.api as sm

    design = np.empty((len(df), N_COV + 2))
    design[:, 0] = 1.0
    design[:, 1] = df["treated"].to_numpy(dtype=np.float64)
    design[:, 2:] = df[COLS].to_numpy(dtype=np.float64)
    res = sm.OLS(df["y"].to_numpy(dtype=np.float64), design).fit()
    low, high = res.conf_int(0.05)[1]
    return {"estimate": float(res.params[1]), "se": float(res.bse[1]), "ci": [low, high]}


def _stock_psw(df, n_jobs: int, bootstrap: int) -> dict:
    from dowhy import CausalModel

    model = CausalModel(data=df, treatment="treated", outcome="y", common_causes=list(COLS))
    estimand = model.identify_effect(proceed_when_unidentifiable=True,
                                     method_name="maximal-adjustment")
    estimate = model.estimate_effect(
        estimand, method_name="backdoor.propensity_score_weighting",
        method_params={"weighting_scheme": "ips_stabilized_weight", "min_ps_score": 0.0,
                       "max_ps_score": 1.0},
        confidence_intervals=False)
    out = {"estimate": float(estimate.value), "se": None, "ci": None}
    if bootstrap > 0:
        np.random.seed(0)  # sklearn.utils.resample draws from the global RNG
        started, cpu = time.perf_counter(), _cpu()
        low, high = np.ravel(estimate.get_confidence_intervals(
            method="bootstrap", num_simulations=bootstrap, sample_size_fraction=1))
        sims = estimate.estimator._bootstrap_estimates.estimates
        out.update(se=float(np.std(sims)), ci=[float(low), float(high)],
                   bootstrap_seconds=time.perf_counter() - started,
                   bootstrap_cpu=_cpu() - cpu, bootstrap=bootstrap)
    return out


def _stock_aipw(df, n_jobs: int, bootstrap: int) -> dict:
    import doubleml

    ml_g, ml_m, _ = _lgb(n_jobs)
    data = doubleml.DoubleMLData.from_arrays(x=df[COLS].to_numpy(dtype=np.float64),
                                             y=df["y"].to_numpy(dtype=np.float64),
                                             d=df["treated"].to_numpy(dtype=np.float64))
    np.random.seed(0)  # DoubleML's default sample splitting draws from the global RNG
    irm = doubleml.DoubleMLIRM(data, ml_g=ml_g, ml_m=ml_m, n_folds=5, score="ATE",
                               trimming_threshold=0.01)
    irm.fit()
    low, high = irm.confint(level=0.95).to_numpy()[0]
    return {"estimate": float(irm.coef[0]), "se": float(irm.se[0]), "ci": [low, high]}


def _stock_dml(df, n_jobs: int, bootstrap: int) -> dict:
    from econml.dml import LinearDML

    model_y, model_t, _ = _lgb(n_jobs)
    est = LinearDML(model_y=model_y, model_t=model_t, discrete_treatment=True, cv=5,
                    random_state=0)
    est.fit(df["y"].to_numpy(dtype=np.float64), df["treated"].to_numpy(dtype=np.int64),
            X=None, W=df[COLS].to_numpy(dtype=np.float64))
    inference = est.intercept__inference()
    low, high = est.intercept__interval(alpha=0.05)
    return {"estimate": float(est.intercept_), "se": float(inference.stderr),
            "ci": [float(low), float(high)]}


STOCK_RUN = {"difference_in_means": _stock_dim, "linear_regression": _stock_linear,
             "propensity_score_weighting": _stock_psw, "aipw": _stock_aipw, "dml": _stock_dml}


def run_stock(method: str, n: int, n_jobs: int, max_rows: int, bootstrap: int) -> dict:
    """Child: the stock library call on the same data (the first ``max_rows`` rows if set)."""
    _quiet()
    _warm_imports()
    df = make_frame(n)
    used = n
    if 0 < max_rows < n:
        df = df.iloc[:max_rows].copy()
        used = max_rows
    base = _rss_mb()
    started, cpu = time.perf_counter(), _cpu()
    out = STOCK_RUN[method](df, n_jobs, bootstrap)
    seconds, cpu = time.perf_counter() - started, _cpu() - cpu
    out.update(seconds=seconds, cpu=cpu, rows_used=used, base_rss_mb=base,
               peak_rss_mb=_peak_rss_mb())
    if "bootstrap_seconds" in out:  # the point estimate is what is compared
        out["seconds"] -= out["bootstrap_seconds"]
        out["cpu"] -= out["bootstrap_cpu"]
    return out


def in_child(fn, *args) -> dict:
    """Run ``fn`` in a fresh spawned interpreter; its peak RSS is its own."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def compare(n: int, method: str, ours: dict, stock: dict) -> dict:
    extrap = stock["rows_used"] < n
    scale = n / stock["rows_used"]
    stock_s = stock["seconds"] * scale
    diff = abs(ours["estimate"] - stock["estimate"])
    ses = [s for s in (ours["se"], stock["se"]) if s is not None]
    agree = diff < AGREE_SE * max(ses)
    row = {"rows": n, "method": method, "stock_name": STOCK[method], "ours": ours,
           "stock": stock, "stock_seconds": stock_s, "extrapolated": extrap,
           "ratio": stock_s / ours["seconds"], "abs_diff": diff, "agree": bool(agree)}
    if stock["se"] is not None:
        row["se_diff"] = abs(ours["se"] - stock["se"])
    return row


def _ci(side: dict) -> str:
    est = f"{side['estimate']:.4f}"
    if side.get("ci") is None:
        return f"{est} (no CI)"
    return f"{est} [{side['ci'][0]:.4f}, {side['ci'][1]:.4f}]"


def print_row(r: dict) -> None:
    o, s = r["ours"], r["stock"]
    star = "*" if r["extrapolated"] else ""
    print(f"  {r['method']}: ours {o['seconds']:.2f} s (prep {o['prep_seconds']:.2f} s, CPU "
          f"{o['cpu']:.1f} s) vs {r['stock_name']} {r['stock_seconds']:.2f}{star} s (CPU "
          f"{s['cpu']:.1f} s, on {s['rows_used']:,} rows) -> {r['ratio']:.2f}x; ours "
          f"{_ci(o)} se {o['se']:.5f}, stock {_ci(s)}"
          + (f" se {s['se']:.5f}" if s["se"] is not None else "")
          + f"; |diff| {r['abs_diff']:.2e}"
          + (f", |SE diff| {r['se_diff']:.2e}" if "se_diff" in r else "")
          + f"; agree {'yes' if r['agree'] else 'NO'}; peak RSS {o['peak_rss_mb']:,.0f} / "
          f"{s['peak_rss_mb']:,.0f} MB (base {o['base_rss_mb']:,.0f} / {s['base_rss_mb']:,.0f})",
          flush=True)
    if "bootstrap" in s:
        print(f"    DoWhy bootstrap SE/CI: {s['bootstrap']} simulations, "
              f"{s['bootstrap_seconds'] * r['rows'] / s['rows_used']:.1f}{star} s (not in ratio)")
    if r["method"] == "difference_in_means":
        print(f"    max abs diff vs statsmodels HC2: estimate {r['abs_diff']:.1e}, "
              f"SE {r['se_diff']:.1e}")


def print_table(rows: list[dict]) -> None:
    print("\n| rows | estimator | stock | ours s (prep) | stock s | ratio stock/ours "
          "| ours CPU s | stock CPU s | ours estimate [95% CI] | stock estimate [95% CI] "
          "| abs diff | agree | ours peak RSS MB | stock peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        o, s = r["ours"], r["stock"]
        star = "*" if r["extrapolated"] else ""
        print(f"| {r['rows']:,} | {r['method']} | {r['stock_name']} | {o['seconds']:.2f} "
              f"({o['prep_seconds']:.2f}) | {r['stock_seconds']:.2f}{star} | "
              f"{r['ratio']:.2f}{star} | {o['cpu']:.1f} | {s['cpu'] * r['rows'] / s['rows_used']:.1f}"
              f"{star} | {_ci(o)} | {_ci(s)} | {r['abs_diff']:.1e} | "
              f"{'yes' if r['agree'] else 'NO'} | {o['peak_rss_mb']:,.0f} | "
              f"{s['peak_rss_mb']:,.0f} |")
    if any(r["extrapolated"] for r in rows):
        print("* stock side timed on the first --stock-max-rows rows and extrapolated linearly "
              "(its estimate is the subsample's)")
    print(f"agree = |ours - stock| < {AGREE_SE:g} x max(SE ours, SE stock where given); "
          f"true effect {TRUE_EFFECT}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", "--sizes", dest="rows", type=int, nargs="+",
                        default=[100_000, 1_000_000])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--n-jobs", type=int, default=2, help="LightGBM threads, both sides")
    parser.add_argument("--stock-max-rows", type=int, default=0,
                        help="time stock sides on the first N rows and extrapolate (0 = all)")
    parser.add_argument("--dowhy-bootstrap", type=int, default=10,
                        help="bootstrap simulations for DoWhy's PSW SE/CI (0 = none); timed "
                             "separately")
    parser.add_argument("--omp-wait-policy", default="PASSIVE",
                        help="OMP_WAIT_POLICY of both sides ('default' = leave unset); "
                             "LightGBM's spinning threads collapse on a shared 2-core box")
    parser.add_argument("--json", default="", help="write the results here")
    args = parser.parse_args(argv)
    if args.omp_wait_policy != "default":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy  # inherited by the spawned sides

    print(f"load: {os.getloadavg()}  cpus: {os.cpu_count()}  python {sys.version.split()[0]}  "
          f"LightGBM n_jobs {args.n_jobs}; OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; true effect {TRUE_EFFECT}", flush=True)
    wall = time.perf_counter()
    rows: list[dict] = []
    for n in args.rows:
        print(f"\n=== {n:,} rows x {N_COV} covariates (load {os.getloadavg()[0]:.2f}) ===",
              flush=True)
        for method in args.methods:
            ours = in_child(run_ours, method, n, args.n_jobs)
            stock = in_child(run_stock, method, n, args.n_jobs, args.stock_max_rows,
                             args.dowhy_bootstrap)
            rows.append(compare(n, method, ours, stock))
            print_row(rows[-1])
    print_table(rows)
    total = time.perf_counter() - wall
    print(f"\nwall time {total:.0f} s; load after: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "wall_seconds": total,
                                               "argv": sys.argv[1:]}, indent=2, default=str))


if __name__ == "__main__":
    main()
