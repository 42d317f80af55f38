"""Refutation suite: our five refuters vs DoWhy's five refuters on the same data.

Data: the synthetic E2I generator (confounded, 19 covariate design columns after one-hot
coding, 10 treatment x modifier interactions); the estimate is DoWhy's linear regression.
Each side runs in a fresh process (multiprocessing spawn) that reads the same Parquet file,
so peak RSS is per side. DoWhy refits per simulation; ``--dowhy-sims`` times it with fewer
simulations and extrapolates the per-simulation time to ``--sims`` (said in the output).

    python benchmarks/bench_refute.py --rows 100000 1000000 --sims 100 --dowhy-sims 10
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
    from e2i_pipelines.analytics.causal.refuters import RefuterSettings, run_refuters

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
    out = queue.get()
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--sims", type=int, default=100)
    parser.add_argument("--dowhy-sims", type=int, default=None,
                        help="simulations DoWhy is timed with (default: --sims)")
    parser.add_argument("--skip-dowhy", action="store_true")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="OPENBLAS/OMP threads of both sides (default: library default)")
    args = parser.parse_args(argv)
    if args.blas_threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.blas_threads)  # inherited by the spawned sides
        print(f"BLAS threads per side: {args.blas_threads}")
    dowhy_sims = args.dowhy_sims or args.sims
    print(f"load: {os.getloadavg()}  cpus: {os.cpu_count()}  python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="bench_refute_") as tmp:
        for rows in args.rows:
            report(bench(rows, args.sims, dowhy_sims, Path(tmp), args.skip_dowhy), args.sims,
                   dowhy_sims)
    print(f"\nload after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
