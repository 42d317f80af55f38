"""Refutation suite: our five refuters vs DoWhy's five refuters on the same data.

Data: the synthetic E2I generator (confounded, 19 covariate design columns after one-hot
coding, 10 treatment x modifier interactions); the estimate is DoWhy's linear regression.
Each side runs in a fresh process (multiprocessing spawn) that reads the same Parquet file,
so peak RSS is per side. DoWhy refits per simulation; ``--dowhy-sims`` times it with fewer
simulations and extrapolates the per-simulation time to ``--sims`` (said in the output).

    python benchmarks/bench_refute.py --rows 100000 1000000 --sims 100 --dowhy-sims 10

``--ml aipw dml``: the ML table instead -- aipw/dml (LightGBM nuisances, 5 folds, 100 trees)
on the 30-covariate data of bench_estimators, end to end from a Parquet file: estimate, the
five refuters and the three diagnostics, against DoWhy's refuters on EconML
(LinearDRLearner for aipw, LinearDML for dml, the same LightGBM params). DoWhy refits per
simulation, so the peer is timed on ``--peer-rows`` rows with ``--peer-sims`` simulations and
extrapolated linearly in rows and simulations (said in the output); agree compares the
estimates within 2 SE (ours, scaled to the peer's rows).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_refute.py --ml aipw dml --rows 200000 1000000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from queue import Empty

from memory import peak_rss_mb as _peak_rss_mb  # noqa: E402 - benchmarks/ is on sys.path

SIM_REFUTERS = ("placebo_treatment", "random_common_cause", "data_subset", "bootstrap")
UCC_GRID = 10  # DoWhy's default sensitivity grid is 10 x 10 strengths


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024**2


def _load(path: str):
    import pandas as pd

    from e2i_pipelines.analytics.causal.estimate import estimate_effect, prepare_frame
    from e2i_pipelines.data.synthetic import SPEC

    warnings.filterwarnings("ignore")
    frame = prepare_frame(pd.read_parquet(path), SPEC)
    _, fit, fitted = estimate_effect(frame, "linear_regression")
    return frame, fit, fitted


def run_ours(path: str, sims: int, queue: mp.Queue) -> None:
    from e2i_pipelines.analytics.causal.refuters import run_refuters
    from e2i_pipelines.analytics.causal.settings import RefuterSettings

    frame, fit, fitted = _load(path)
    base = _current_rss_mb()
    started = time.perf_counter()
    results = run_refuters(frame, fit, fitted,
                           RefuterSettings(num_simulations=sims, seed=1))
    total = time.perf_counter() - started
    queue.put({
        "seconds": total, "base_rss_mb": base, "peak_rss_mb": _peak_rss_mb(),
        "per_refuter": {r.name: r.seconds for r in results},
        "mean": {r.name: r.new_effect for r in results},
        "sd": {r.name: float(r.simulations.std()) for r in results if r.simulations is not None},
        "p": {r.name: r.p_value for r in results},
        "ucc_grid": results[-1].simulations.tolist(),
        "estimate": results[0].estimate,
    })


def run_dowhy(path: str, sims: int, dowhy_sims: int, queue: mp.Queue) -> None:
    import numpy as np

    from e2i_pipelines.analytics.causal.refute_dowhy import (
        default_strength_grid,
        dowhy_refute,
        dowhy_unobserved_effect,
    )

    frame, _, (model, estimand, estimate) = _load(path)
    base = _current_rss_mb()
    per_sim, mean, p = {}, {}, {}
    for i, name in enumerate(SIM_REFUTERS):
        started = time.perf_counter()
        mean[name], p[name] = dowhy_refute(name, model, estimand, estimate,
                                           num_simulations=dowhy_sims, random_seed=i)
        per_sim[name] = (time.perf_counter() - started) / dowhy_sims
    # sensitivity: DoWhy fits once per grid point; time a few points of the same grid
    kt, ky = default_strength_grid(frame.data, estimand, frame.treatment, frame.outcome, 1.0,
                                   UCC_GRID)
    points = max(2, dowhy_sims // 5)
    started = time.perf_counter()
    ucc = [dowhy_unobserved_effect(model, estimand, estimate, kt[-1], ky[j % len(ky)])
           for j in range(points)]
    per_sim["unobserved_common_cause"] = (time.perf_counter() - started) / points
    queue.put({
        "per_sim": per_sim, "mean": mean, "p": p, "base_rss_mb": base,
        "peak_rss_mb": _peak_rss_mb(), "ucc_points": ucc,
        "ucc_kappa_y": [float(ky[j % len(ky)]) for j in range(points)],
        "extrapolated_seconds": {k: v * (UCC_GRID**2 if k == "unobserved_common_cause" else sims)
                                 for k, v in per_sim.items()},
        "kappa_y": np.asarray(ky).tolist(),
    })


def _spawn(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    while True:  # a child that dies (a segfault) never reports: say so instead of hanging
        try:
            out = queue.get(timeout=5)
            break
        except Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{target.__name__} exited with code {proc.exitcode} "
                                   "before reporting") from None
    proc.join()
    return out


def bench(rows: int, sims: int, dowhy_sims: int, workdir: Path, skip_dowhy: bool) -> dict:
    from e2i_pipelines.data.synthetic import generate_e2i

    path = workdir / f"e2i_{rows}.parquet"
    if not path.exists():
        frame, _ = generate_e2i(rows, seed=11)
        frame.to_parquet(path)
        del frame
    ours = _spawn(run_ours, str(path), sims)
    theirs = None if skip_dowhy else _spawn(run_dowhy, str(path), sims, dowhy_sims)
    return {"rows": rows, "ours": ours, "dowhy": theirs}


def report(res: dict, sims: int, dowhy_sims: int) -> None:
    ours, theirs, rows = res["ours"], res["dowhy"], res["rows"]
    print(f"\n=== {rows:,} rows, {sims} simulations per refuter (sensitivity: "
          f"{UCC_GRID}x{UCC_GRID} grid) ===")
    print(f"ours (fast, all five): {ours['seconds']:.1f} s, peak RSS {ours['peak_rss_mb']:.0f} MB "
          f"(after data load {ours['base_rss_mb']:.0f} MB)")
    for name, sec in ours["per_refuter"].items():
        print(f"  {name:24s} {sec:7.2f} s  mean effect {ours['mean'][name]:.4f}"
              + (f"  p={ours['p'][name]:.3f}" if ours['p'][name] is not None else ""))
    if theirs is None:
        return
    total = sum(theirs["extrapolated_seconds"].values())
    note = "" if dowhy_sims == sims else (f" (timed with {dowhy_sims} simulations, "
                                          f"extrapolated per simulation to {sims})")
    print(f"DoWhy refuters (n_jobs=1): {total:.1f} s{note}, peak RSS "
          f"{theirs['peak_rss_mb']:.0f} MB (after data load {theirs['base_rss_mb']:.0f} MB)")
    max_diff = 0.0
    for name in SIM_REFUTERS:
        sd = ours["sd"][name]
        diff = abs(ours["mean"][name] - theirs["mean"][name])
        z = diff / (sd * (1 / sims + 1 / dowhy_sims) ** 0.5) if sd > 0 else float("nan")
        max_diff = max(max_diff, diff)
        print(f"  {name:24s} {theirs['per_sim'][name]:7.3f} s/sim -> "
              f"{theirs['extrapolated_seconds'][name]:7.1f} s  mean effect "
              f"{theirs['mean'][name]:.4f} (|diff| {diff:.4f} = {z:.2f} MC s.e.)  "
              f"p={theirs['p'][name]:.3f}")
    ucc_sec = theirs["extrapolated_seconds"]["unobserved_common_cause"]
    print(f"  {'unobserved_common_cause':24s} {theirs['per_sim']['unobserved_common_cause']:7.3f}"
          f" s/point -> {ucc_sec:7.1f} s for {UCC_GRID**2} grid points")
    grid = ours["ucc_grid"]
    ky = theirs["kappa_y"]
    for kyv, eff in zip(theirs["ucc_kappa_y"], theirs["ucc_points"], strict=True):
        j = ky.index(kyv)
        ours_eff = grid[(UCC_GRID - 1) * UCC_GRID + j]
        print(f"    kappa_t max, kappa_y {kyv:8.3f}: ours {ours_eff:.4f} DoWhy {eff:.4f}")
    print(f"speed-up: {total / ours['seconds']:.1f}x ; max |mean effect diff| over the four "
          f"simulation refuters {max_diff:.4f}")


ML_PEERS = {"aipw": "econml.dr.LinearDRLearner", "dml": "econml.dml.LinearDML"}
SCORE_SIMS = ("placebo_treatment", "data_subset", "bootstrap")


def _ml_frame(path: str):
    import pandas as pd
    from bench_estimators import COLS

    from e2i_pipelines.analytics.causal.estimate import prepare_frame
    from e2i_pipelines.core.spec import CausalSpec

    warnings.filterwarnings("ignore")
    spec = CausalSpec(treatment="treated", outcome="y", common_causes=list(COLS))
    return prepare_frame(pd.read_parquet(path), spec)


def _cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_ml_ours(path: str, method: str, sims: int, n_jobs: int, queue: mp.Queue) -> None:
    """aipw/dml end to end from the file: estimate, five refuters, three diagnostics."""
    from e2i_pipelines.analytics.causal.diagnostics.run import run_diagnostics
    from e2i_pipelines.analytics.causal.estimate import estimate_effect, fit_effect
    from e2i_pipelines.analytics.causal.refuters import run_refuters
    from e2i_pipelines.analytics.causal.settings import EstimatorSettings, RefuterSettings

    started, cpu = time.perf_counter(), _cpu()
    frame = _ml_frame(path)
    settings = EstimatorSettings(n_jobs=n_jobs)
    result, fit, _ = estimate_effect(frame, method, settings=settings)
    estimated = time.perf_counter() - started
    refuters = RefuterSettings(num_simulations=sims, seed=1, bootstrap_noise=0, n_jobs=n_jobs)
    results = run_refuters(frame, fit, None, refuters,
                           refit=lambda f: float(fit_effect(f, method, settings)[0].estimate))
    refuted = time.perf_counter()
    diagnostics = run_diagnostics(frame, fit, 0.95)
    done = time.perf_counter()
    queue.put({"seconds": done - started, "cpu": _cpu() - cpu, "estimate_s": estimated,
               "refute_s": refuted - started - estimated, "diagnose_s": done - refuted,
               "estimate": result.estimate, "se": result.std_error,
               "per_refuter": {r.name: (r.seconds, r.passed) for r in results},
               "diagnostics": {d.name: d.passed for d in diagnostics},
               "peak_rss_mb": _peak_rss_mb(), "refits": refuters.refit_simulations})


def run_ml_peer(path: str, method: str, rows: int, sims: int, n_jobs: int,
                queue: mp.Queue) -> None:
    """DoWhy's refuters on EconML (same LightGBM params), timed per refit on ``rows`` rows."""
    import lightgbm as lgb
    from dowhy import CausalModel

    from e2i_pipelines.analytics.causal.estimators import _lgb_params
    from e2i_pipelines.analytics.causal.refute_dowhy import dowhy_refute, dowhy_unobserved_effect
    from e2i_pipelines.analytics.causal.settings import EstimatorSettings

    frame = _ml_frame(path)
    data = frame.data.iloc[:rows].copy()
    data[frame.treatment] = data[frame.treatment].astype(int)
    params = _lgb_params(EstimatorSettings(n_jobs=n_jobs))
    init = ({"model_y": lgb.LGBMRegressor(**params), "model_t": lgb.LGBMClassifier(**params),
             "discrete_treatment": True, "cv": 5} if method == "dml" else
            {"model_regression": lgb.LGBMRegressor(**params),
             "model_propensity": lgb.LGBMClassifier(**params), "cv": 5})
    model = CausalModel(data=data, treatment=frame.treatment, outcome=frame.outcome,
                        common_causes=frame.common_causes)
    estimand = model.identify_effect(proceed_when_unidentifiable=True,
                                     method_name="maximal-adjustment")
    started = time.perf_counter()
    estimate = model.estimate_effect(estimand, method_name=f"backdoor.{ML_PEERS[method]}",
                                     method_params={"init_params": init, "fit_params": {}})
    fit_s = time.perf_counter() - started
    per_refit = {}
    for i, name in enumerate((*SCORE_SIMS, "random_common_cause")):
        t0 = time.perf_counter()
        dowhy_refute(name, model, estimand, estimate, num_simulations=sims, noise=0.0,
                     random_seed=i)
        per_refit[name] = (time.perf_counter() - t0) / sims
    t0 = time.perf_counter()
    dowhy_unobserved_effect(model, estimand, estimate, 0.05, 0.5)
    per_refit["unobserved_common_cause"] = time.perf_counter() - t0
    queue.put({"estimate": float(estimate.value), "fit_s": fit_s, "per_refit": per_refit,
               "rows": rows})


def bench_ml(rows: int, methods: list[str], sims: int, peer_rows: int, peer_sims: int,
             n_jobs: int, workdir: Path, skip_peer: bool) -> None:
    """The ML table: ours end to end against DoWhy's refuters on EconML (extrapolated)."""
    from bench_estimators import make_frame

    path = workdir / f"ml_{rows}.parquet"
    if not path.exists():
        make_frame(rows).to_parquet(path)
    for method in methods:
        ours = _spawn(run_ml_ours, str(path), method, sims, n_jobs)
        print(f"\n=== {method} at {rows:,} x 30: estimate + 5 refuters ({sims} simulations; "
              f"{ours['refits']} random-common-cause refits, 3 unobserved refits) + 3 "
              f"diagnostics ===")
        print(f"ours: {ours['seconds']:.1f} s wall, {ours['cpu']:.1f} s CPU (estimate "
              f"{ours['estimate_s']:.1f} s, refuters {ours['refute_s']:.1f} s, diagnostics "
              f"{ours['diagnose_s']:.1f} s), peak RSS {ours['peak_rss_mb']:.0f} MB, estimate "
              f"{ours['estimate']:.4f} (SE {ours['se']:.4f}); load {os.getloadavg()[0]:.1f}")
        for name, (sec, passed) in ours["per_refuter"].items():
            print(f"  {name:24s} {sec:7.1f} s  passed={passed}")
        print(f"  diagnostics: {ours['diagnostics']}")
        if skip_peer:
            continue
        used = min(peer_rows, rows)
        peer = _spawn(run_ml_peer, str(path), method, used, peer_sims, n_jobs)
        scale = rows / used  # LightGBM fits are ~linear in rows
        counts = {**dict.fromkeys(SCORE_SIMS, sims),
                  "random_common_cause": ours["refits"], "unobserved_common_cause": 3}
        peer_s = scale * (peer["fit_s"] + sum(peer["per_refit"][k] * c
                                              for k, c in counts.items()))
        agree = abs(ours["estimate"] - peer["estimate"]) < 2 * ours["se"] * (rows / used) ** 0.5
        print(f"peer: DoWhy refuters on {ML_PEERS[method]} timed on {used:,} rows with "
              f"{peer_sims} simulations per refuter, extrapolated linearly to {rows:,} rows and "
              f"{counts} refits: {peer_s:.0f} s (estimate fit {peer['fit_s']:.1f} s at "
              f"{used:,} rows; estimate {peer['estimate']:.4f})")
        print(f"RATIO name={method}+refuters+diagnostics rows={rows} ours_s={ours['seconds']:.1f}"
              f" peer=dowhy+{ML_PEERS[method]} peer_s={peer_s:.0f} "
              f"ratio={peer_s / ours['seconds']:.1f} agree={'yes' if agree else 'no'} "
              f"load={os.getloadavg()[0]:.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--sims", type=int, default=100)
    parser.add_argument("--dowhy-sims", type=int, default=None,
                        help="simulations DoWhy is timed with (default: --sims)")
    parser.add_argument("--skip-dowhy", action="store_true")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="OPENBLAS/OMP threads of both sides (default: library default)")
    parser.add_argument("--ml", nargs="*", choices=sorted(ML_PEERS), default=None,
                        help="the aipw/dml table instead of the linear one")
    parser.add_argument("--peer-rows", type=int, default=20_000,
                        help="rows the ML peer is timed on (extrapolated linearly)")
    parser.add_argument("--peer-sims", type=int, default=2)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.blas_threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.blas_threads)  # inherited by the spawned sides
        print(f"BLAS threads per side: {args.blas_threads}")
    dowhy_sims = args.dowhy_sims or args.sims
    print(f"load: {os.getloadavg()}  cpus: {os.cpu_count()}  python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="bench_refute_") as tmp:
        for rows in args.rows if args.ml else ():
            bench_ml(rows, args.ml, args.sims, args.peer_rows, args.peer_sims, args.n_jobs,
                     Path(tmp), args.skip_dowhy)
        for rows in () if args.ml else args.rows:
            report(bench(rows, args.sims, dowhy_sims, Path(tmp), args.skip_dowhy), args.sims,
                   dowhy_sims)
    print(f"\nload after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
