"""Effect estimators: ours end to end from the dataset file vs each peer's library call.

Data (seeded, regenerated identically in every child): n rows x 30 covariates (x00-x24
Gaussian, the first ten sharing a common factor; x25-x29 binary), a binary treatment whose
logit is a bounded nonlinear function of x00-x04 and x25 (true propensity in [0.12, 0.88]),
an outcome with nonlinear confounding through the same covariates plus prognostic-only ones,
and a constant true effect of 2.0 (so ATE = 2.0). Difference in means, linear regression and
the (linear-logit) weighting estimator are biased here by design; AIPW and DML with LightGBM
nuisances should recover 2.0. The comparison is ours against each peer, not the truth.

Ours runs as the ``causal_estimate`` asset does, from the dataset's Parquet file (written
once per size before any timing): ``read_dataset_frame`` (only the spec's columns) ->
``prepare_frame`` -> Arrow's freed memory released (the asset's ``dataset_frame`` does both) ->
``estimate_effect(frame, method, settings=EstimatorSettings(n_jobs))``,
all inside our seconds (read and prep also shown alone). The spec has the 30 covariates as
common causes, except for difference_in_means, whose spec is the randomised design it is
meant for (treatment and outcome only: what ``method: auto`` picks it for). A peer's seconds
are its library call alone on the DataFrame already in memory, its inputs built from it.

Peers (ours | peer call):
  * difference_in_means | statsmodels ``OLS(y, [1, T]).fit(cov_type="HC2")``.
  * linear_regression | statsmodels ``OLS(y, [1, T, X]).fit()``; DoWhy ``CausalModel`` +
    ``identify_effect(method_name="maximal-adjustment")`` + ``backdoor.linear_regression``
    (DoWhy's default identification enumerates adjustment sets, ~50 s for 30 covariates).
  * propensity_score_weighting (unpenalised logistic MLE, stabilised Hajek weights, no
    trimming) | DoWhy ``backdoor.propensity_score_weighting`` with
    ``weighting_scheme="ips_stabilized_weight"``, ``min_ps_score=0, max_ps_score=1`` (no
    clipping) and an unpenalised propensity model, sklearn ``LogisticRegression(penalty=None,
    solver="newton-cholesky")`` (DoWhy's default model is L2-penalised: another estimator);
    statsmodels ``GLM(T, [1, X], Binomial()).fit()`` then the stabilised weights and
    ``GLM(y, [1, T], var_weights=w).fit()`` (its T coefficient is the Hajek contrast).
  * aipw (LightGBM nuisances, 5 stratified folds, 100 trees) | DoubleML ``DoubleMLIRM``
    (score "ATE", the same LightGBM learners/params, n_folds=5, its own random folds,
    ``trimming_threshold=0.01`` = our propensity clip).
  * dml | DoubleML ``DoubleMLPLR`` (partialling out, the same learners, 5 folds); EconML
    ``LinearDML`` (model_y LGBMRegressor, model_t LGBMClassifier, discrete_treatment=True,
    cv=5, the same LightGBM params; W = covariates).

Each side runs in a fresh spawned process that imports its own libraries before its timer
starts (a peer: its library) (ours: e2i_pipelines and pyarrow.parquet, which the reader imports
lazily, plus LightGBM/DoubleML for aipw/dml; it must not import DoWhy,
statsmodels or scikit-learn for the closed-form methods, and the run says whether it did).
What each timer covers: ours, opening the Parquet file, its schema check, reading the spec's
columns, the pandas view, validation, the design matrix, the estimate, its SE/CI and the
score arrays the later steps use (the modules the reader imports lazily on first use,
``pyarrow.pandas_compat`` and UPath's local implementation, ~4 ms, are inside it); a peer,
building its inputs from the DataFrame in memory and its library call (no file, no
validation; the process already generated the data, so its heap is warm). Every side runs
``--repeat`` times (default 3), each in a fresh process, and the median run is reported
with every run's seconds.
Peak RSS = that process's VmHWM; CPU s = its user+sys, all threads. LightGBM n_jobs on both
sides. Both sides run with OMP_WAIT_POLICY=PASSIVE by default: with spinning OpenMP threads,
LightGBM with n_jobs=2 on a 2-core machine that also runs other work took 48 s instead of
3 s for one fit.

Agreement: closed-form estimators |ours - peer| <= 1e-8; cross-fitted ones |ours - peer| <
2 x max(SE ours, SE peer). Each comparison prints one line

    RATIO name=<method> rows=<n> ours_s=<x> peer=<library call> peer_s=<y> ratio=<y/x> agree=<yes|no>

    python benchmarks/bench_estimators.py                          # 100k and 1M, all pairs
    python benchmarks/bench_estimators.py --rows 100000 1000000 --methods difference_in_means linear_regression propensity_score_weighting
    python benchmarks/bench_estimators.py --rows 1000000 --stock-max-rows 200000

With ``--stock-max-rows N`` a peer runs on the first N rows only, its seconds are
extrapolated linearly to the full size and marked with * (its estimate is then the N-row one).
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from memory import peak_rss_mb as _peak_rss_mb  # noqa: E402 - benchmarks/ is on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, in spawned sides too

N_COV, TRUE_EFFECT, SEED = 30, 2.0, 7
COLS = [f"x{i:02d}" for i in range(N_COV)]
METHODS = ("difference_in_means", "linear_regression", "propensity_score_weighting", "aipw",
           "dml")
CLOSED_FORM = {"difference_in_means", "linear_regression", "propensity_score_weighting"}
AGREE_ABS, AGREE_SE = 1e-8, 2.0
FOREIGN = ("dowhy", "statsmodels", "sklearn")
"""Libraries our closed-form path must not import."""


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


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _quiet() -> None:
    import logging

    warnings.filterwarnings("ignore")
    for name in ("dowhy", "doubleml", "econml"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _spec(method: str):
    from e2i_pipelines.core.spec import CausalSpec

    causes = [] if method == "difference_in_means" else list(COLS)
    return CausalSpec(treatment="treated", outcome="y", common_causes=causes)


def run_ours(method: str, n: int, path: str, n_jobs: int) -> dict:
    """Child: the dataset file -> read_dataset_frame -> prepare_frame -> estimate_effect."""
    _quiet()
    import pyarrow.parquet  # noqa: F401 - our reader's library, imported lazily by the asset

    from e2i_pipelines.analytics.causal.estimate import (
        estimate_effect,
        prepare_frame,
        read_dataset_frame,
    )
    from e2i_pipelines.analytics.causal.settings import EstimatorSettings
    from e2i_pipelines.core.arrow_memory import release_read_memory
    from e2i_pipelines.core.refs import DatasetRef
    if method not in CLOSED_FORM:
        import doubleml  # noqa: F401
        import lightgbm  # noqa: F401
    foreign_before = {m for m in sys.modules if m.split(".")[0] in FOREIGN}
    spec = _spec(method)
    ref = DatasetRef(path=path, spec=spec, n_rows=n, id_column="")
    settings = EstimatorSettings(n_jobs=n_jobs)
    started, cpu = time.perf_counter(), _cpu()
    df = read_dataset_frame(ref, 0, 0)
    read = time.perf_counter() - started
    frame = prepare_frame(df, spec)
    del df
    release_read_memory()  # as dataset_frame, the asset's reader, does
    prep = time.perf_counter() - started - read
    result, _fit, _ = estimate_effect(frame, method, settings=settings)
    seconds, cpu = time.perf_counter() - started, _cpu() - cpu
    foreign = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in FOREIGN}
                     - {m.split(".")[0] for m in foreign_before})
    return {"seconds": seconds, "read_seconds": read, "prep_seconds": prep, "cpu": cpu,
            "rows_used": n, "estimate": result.estimate, "se": result.std_error,
            "peak_rss_mb": _peak_rss_mb(), "imported": foreign}


def _lgb(n_jobs: int):
    """The LightGBM learners our estimators use (same params, n_jobs)."""
    import lightgbm as lgb

    from e2i_pipelines.analytics.causal.estimators import _lgb_params
    from e2i_pipelines.analytics.causal.settings import EstimatorSettings

    params = _lgb_params(EstimatorSettings(n_jobs=n_jobs))
    return lgb.LGBMRegressor(**params), lgb.LGBMClassifier(**params), params


def _xty(df):
    return (df[COLS].to_numpy(dtype=np.float64), df["treated"].to_numpy(dtype=np.float64),
            df["y"].to_numpy(dtype=np.float64))


def _stock_dim(df, n_jobs: int) -> dict:
    import statsmodels.api as sm

    t = df["treated"].to_numpy(dtype=np.float64)
    design = np.column_stack([np.ones_like(t), t])
    res = sm.OLS(df["y"].to_numpy(dtype=np.float64), design).fit(cov_type="HC2")
    return {"estimate": float(res.params[1]), "se": float(res.bse[1])}


def _stock_ols(df, n_jobs: int) -> dict:
    import statsmodels.api as sm

    design = np.empty((len(df), N_COV + 2))
    design[:, 0] = 1.0
    design[:, 1] = df["treated"].to_numpy(dtype=np.float64)
    design[:, 2:] = df[COLS].to_numpy(dtype=np.float64)
    res = sm.OLS(df["y"].to_numpy(dtype=np.float64), design).fit()
    return {"estimate": float(res.params[1]), "se": float(res.bse[1])}


def _dowhy(df, method_name: str, params: dict):
    from dowhy import CausalModel

    model = CausalModel(data=df, treatment="treated", outcome="y", common_causes=list(COLS))
    estimand = model.identify_effect(proceed_when_unidentifiable=True,
                                     method_name="maximal-adjustment")
    return model.estimate_effect(estimand, method_name=method_name, method_params=params,
                                 confidence_intervals=False)


def _stock_dowhy_linear(df, n_jobs: int) -> dict:
    estimate = _dowhy(df, "backdoor.linear_regression", {"need_conditional_estimates": False})
    return {"estimate": float(estimate.value), "se": None}


def _stock_dowhy_psw(df, n_jobs: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(penalty=None, solver="newton-cholesky", tol=1e-10, max_iter=100)
    estimate = _dowhy(df, "backdoor.propensity_score_weighting",
                      {"weighting_scheme": "ips_stabilized_weight", "min_ps_score": 0.0,
                       "max_ps_score": 1.0, "propensity_score_model": model})
    return {"estimate": float(estimate.value), "se": None}


def _stock_glm_psw(df, n_jobs: int) -> dict:
    import statsmodels.api as sm

    X, t, y = _xty(df)
    e = sm.GLM(t, sm.add_constant(X), family=sm.families.Binomial()).fit().fittedvalues
    p = t.mean()
    w = np.where(t == 1, p / e, (1 - p) / (1 - e))
    res = sm.GLM(y, sm.add_constant(t), family=sm.families.Gaussian(), var_weights=w).fit()
    return {"estimate": float(res.params[1]), "se": None}


def _stock_aipw(df, n_jobs: int) -> dict:
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


def _stock_doubleml_plr(df, n_jobs: int) -> dict:
    import doubleml

    ml_l, ml_m, _ = _lgb(n_jobs)
    X, t, y = _xty(df)
    np.random.seed(0)  # DoubleML's default sample splitting draws from the global RNG
    plr = doubleml.DoubleMLPLR(doubleml.DoubleMLData.from_arrays(x=X, y=y, d=t), ml_l=ml_l,
                               ml_m=ml_m, n_folds=5, score="partialling out")
    plr.fit()
    return {"estimate": float(plr.coef[0]), "se": float(plr.se[0])}


def _stock_dml(df, n_jobs: int) -> dict:
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


PEERS: dict[str, list[tuple[str, object]]] = {
    "difference_in_means": [("statsmodels.OLS(cov_type=HC2)", _stock_dim)],
    "linear_regression": [("statsmodels.OLS", _stock_ols),
                          ("dowhy.backdoor.linear_regression", _stock_dowhy_linear)],
    "propensity_score_weighting": [("dowhy.backdoor.propensity_score_weighting",
                                    _stock_dowhy_psw),
                                   ("statsmodels.GLM+var_weights", _stock_glm_psw)],
    "aipw": [("doubleml.DoubleMLIRM", _stock_aipw)],
    "dml": [("doubleml.DoubleMLPLR", _stock_doubleml_plr), ("econml.LinearDML", _stock_dml)],
}


PEER_IMPORTS = {"statsmodels": ("statsmodels.api",),
                "dowhy": ("dowhy", "sklearn.linear_model"),
                "doubleml": ("doubleml", "lightgbm"), "econml": ("econml.dml", "lightgbm")}


def run_stock(method: str, peer: int, n: int, n_jobs: int, max_rows: int) -> dict:
    """Child: one peer's library call on the same data (the first ``max_rows`` rows if set)."""
    _quiet()
    name = PEERS[method][peer][0]
    for module in PEER_IMPORTS[name.split(".")[0]]:  # the peer's libraries, before the timer
        importlib.import_module(module)
    df = make_frame(n)
    used = n
    if 0 < max_rows < n:
        df = df.iloc[:max_rows].copy()
        used = max_rows
    started, cpu = time.perf_counter(), _cpu()
    out = PEERS[method][peer][1](df, n_jobs)
    seconds, cpu = time.perf_counter() - started, _cpu() - cpu
    out.update(seconds=seconds, cpu=cpu, rows_used=used, peak_rss_mb=_peak_rss_mb())
    return out


def in_child(fn, *args) -> dict:
    """Run ``fn`` in a fresh spawned interpreter; its peak RSS is its own."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def repeated(k: int, fn, *args) -> dict:
    """``fn`` in ``k`` fresh children: the run with the median seconds, plus every run's
    seconds (the shared 2-core machine's load moves single runs by 2-5x at 100k rows)."""
    runs = sorted((in_child(fn, *args) for _ in range(k)), key=lambda r: r["seconds"])
    out = dict(runs[(k - 1) // 2])
    out["runs_seconds"] = [r["seconds"] for r in runs]
    return out


def compare(n: int, method: str, peer_name: str, ours: dict, stock: dict) -> dict:
    extrap = stock["rows_used"] < n
    stock_s = stock["seconds"] * n / stock["rows_used"]
    diff = abs(ours["estimate"] - stock["estimate"])
    if method in CLOSED_FORM and not extrap:
        agree = diff <= AGREE_ABS
    else:
        ses = [s for s in (ours["se"], stock["se"]) if s is not None]
        agree = diff < AGREE_SE * max(ses)
    return {"rows": n, "method": method, "peer": peer_name, "ours": ours, "stock": stock,
            "stock_seconds": stock_s, "stock_cpu": stock["cpu"] * n / stock["rows_used"],
            "extrapolated": extrap, "ratio": stock_s / ours["seconds"], "abs_diff": diff,
            "agree": bool(agree)}


def ratio_line(r: dict) -> str:
    star = "*" if r["extrapolated"] else ""
    return (f"RATIO name={r['method']} rows={r['rows']} ours_s={r['ours']['seconds']:.3f} "
            f"peer={r['peer']} peer_s={r['stock_seconds']:.3f}{star} ratio={r['ratio']:.2f}"
            f"{star} agree={'yes' if r['agree'] else 'no'}")


def print_row(r: dict) -> None:
    o, s = r["ours"], r["stock"]
    star = "*" if r["extrapolated"] else ""
    print(f"  {r['method']} vs {r['peer']} (load {os.getloadavg()[0]:.2f}): ours "
          f"{o['seconds']:.3f} s (read {o['read_seconds']:.3f}"
          f" s, prep {o['prep_seconds']:.3f} s; CPU {o['cpu']:.2f} s; peak RSS "
          f"{o['peak_rss_mb']:,.0f} MB) vs {r['stock_seconds']:.3f}{star} s (CPU "
          f"{r['stock_cpu']:.2f}{star} s; peak RSS {s['peak_rss_mb']:,.0f} MB; on "
          f"{s['rows_used']:,} rows); runs ours {_runs(o)} / peer {_runs(s)} s; "
          f"estimates {o['estimate']:.10f} / {s['estimate']:.10f}, "
          f"|diff| {r['abs_diff']:.1e}; ours imported {o['imported'] or 'no peer library'}",
          flush=True)
    print(ratio_line(r), flush=True)


def _runs(side: dict) -> str:
    return "/".join(f"{x:.3f}" for x in side["runs_seconds"])


def print_table(rows: list[dict]) -> None:
    print("\n| rows | estimator | peer | ours s (read, prep) | peer s | ratio peer/ours "
          "| ours CPU s | peer CPU s | abs diff | agree | ours peak RSS MB | peer peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        o, s = r["ours"], r["stock"]
        star = "*" if r["extrapolated"] else ""
        print(f"| {r['rows']:,} | {r['method']} | `{r['peer']}` | {o['seconds']:.3f} "
              f"({o['read_seconds']:.3f}, {o['prep_seconds']:.3f}) | "
              f"{r['stock_seconds']:.3f}{star} | {r['ratio']:.2f}{star} | {o['cpu']:.2f} | "
              f"{r['stock_cpu']:.2f}{star} | {r['abs_diff']:.1e} | "
              f"{'yes' if r['agree'] else 'NO'} | {o['peak_rss_mb']:,.0f} | "
              f"{s['peak_rss_mb']:,.0f} |")
    if any(r["extrapolated"] for r in rows):
        print("* peer timed on the first --stock-max-rows rows and extrapolated linearly "
              "(its estimate is the subsample's)")
    print(f"agree = |ours - peer| <= {AGREE_ABS:g} (closed form) or < {AGREE_SE:g} x "
          f"max(SE) (cross-fitted); true effect {TRUE_EFFECT}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", "--sizes", dest="rows", type=int, nargs="+",
                        default=[100_000, 1_000_000])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--n-jobs", type=int, default=2, help="LightGBM threads, both sides")
    parser.add_argument("--stock-max-rows", type=int, default=0,
                        help="time peers on the first N rows and extrapolate (0 = all)")
    parser.add_argument("--omp-wait-policy", default="PASSIVE",
                        help="OMP_WAIT_POLICY of both sides ('default' = leave unset); "
                             "LightGBM's spinning threads collapse on a shared 2-core box")
    parser.add_argument("--repeat", type=int, default=3,
                        help="fresh-process runs per side; the median run is reported")
    parser.add_argument("--json", default="", help="write the results here")
    args = parser.parse_args(argv)
    if args.omp_wait_policy != "default":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy  # inherited by the spawned sides

    print(f"load average (1, 5, 15 min): {os.getloadavg()}  cpus: {os.cpu_count()}  python "
          f"{sys.version.split()[0]}  runs per side {args.repeat} (median reported);  "
          f"LightGBM n_jobs {args.n_jobs}; OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; true effect {TRUE_EFFECT}", flush=True)
    wall, cpu0 = time.perf_counter(), _cpu()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-estimators-") as tmp:
        for n in args.rows:
            path = str(Path(tmp) / f"data-{n}.parquet")
            make_frame(n).to_parquet(path, index=False)
            print(f"\n=== {n:,} rows x {N_COV} covariates, dataset file "
                  f"{os.path.getsize(path) / 1e6:,.0f} MB (load {os.getloadavg()[0]:.2f}) ===",
                  flush=True)
            for method in args.methods:
                ours = repeated(args.repeat, run_ours, method, n, path, args.n_jobs)
                for i, (name, _) in enumerate(PEERS[method]):
                    stock = repeated(args.repeat, run_stock, method, i, n, args.n_jobs,
                                     args.stock_max_rows)
                    rows.append(compare(n, method, name, ours, stock))
                    print_row(rows[-1])
    print_table(rows)
    print("\n" + "\n".join(ratio_line(r) for r in rows))
    total = time.perf_counter() - wall
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"\nwall time {total:.0f} s; CPU {children.ru_utime + children.ru_stime:.0f} s "
          f"(children) + {_cpu() - cpu0:.0f} s (this process); load average after: "
          f"{os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "wall_seconds": total,
                                               "argv": sys.argv[1:]}, indent=2, default=str))


if __name__ == "__main__":
    main()
