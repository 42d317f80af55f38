"""Digital twins benchmark: ours vs copulas.GaussianMultivariate vs a naive one-shot copula.

Real-shaped data from the E2I generator (fit sample ``--fit-rows``), a LightGBM outcome model
(200 trees, 31 leaves) trained on it; then for each N in ``--sizes``:

* ours: fit the stratified copula, stream N twins to Parquet in chunks (with the fidelity
  report), then simulate treat-all / treat-none / targeting on the file (exact tree uplift);
* copulas: the stock library, ``copulas.GaussianMultivariate(distribution=...)``
  (categoricals label-encoded, decoded by rounding) fitted on the same rows, ``sample(N)``
  in one shot, then ``booster.predict`` on all N twins treated and untreated. The default
  univariate selection is impractical here (fit on 50k rows + 1M twins reached 19.6 GB RSS
  and was OOM-killed; fit on 5k rows did not finish in 400 s), so the default
  ``--copulas-distribution`` is the parametric GaussianUnivariate. Its address space is
  capped (``--copulas-mem-gb``);
* naive: the textbook one-shot numpy/scipy Gaussian copula (label-encoded columns, rank
  normal scores, ``multivariate_normal`` for all N rows, empirical ppf per column), then
  ``booster.predict`` on all N twins treated and untreated.

Each side runs in a fresh 'spawn' subprocess; its peak RSS is that process's ru_maxrss and
its CPU time is user+system of that process (all threads): on a shared machine CPU time is
the load-robust measure, wall time is what you waited. Fidelity of every side is measured
with the same accumulator against the same real rows.

    python benchmarks/bench_twins.py --sizes 1000000 10000000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import tempfile
import time
import traceback
from pathlib import Path

from memory import peak_rss_mb as _peak_rss_mb  # noqa: E402 - benchmarks/ is on sys.path

COVARIATE_TARGETING = "engagement_score > 0.5 and region == 'Northeast'"


def _cpu_s() -> float:
    """CPU seconds of this process, all threads (robust to other load on the machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def prepare(workdir: Path, fit_rows: int, seed: int) -> dict:
    """Write the real data and the outcome model; returns their paths and facts."""
    import lightgbm as lgb

    from e2i_pipelines.core.refs import ModelRef
    from e2i_pipelines.data.synthetic import SPEC, generate_e2i

    frame, truth = generate_e2i(fit_rows, seed=seed)
    frame.to_parquet(workdir / "real.parquet")
    feats = [SPEC.treatment, *SPEC.covariates]
    booster = lgb.train({"objective": "regression", "num_leaves": 31, "learning_rate": 0.05,
                         "verbose": -1, "num_threads": 2, "seed": seed},
                        lgb.Dataset(frame[feats], frame[SPEC.outcome]), num_boost_round=200)
    booster.save_model(str(workdir / "model.txt"))
    cats = {c: list(frame[c].cat.categories) for c in ("region", "specialty")}
    ref = ModelRef(str(workdir / "model.txt"), feats, SPEC.treatment, SPEC.outcome, cats)
    return {"model_ref": ref, "columns": [*SPEC.covariates, SPEC.treatment],
            "treatment": SPEC.treatment, "true_ate": truth["ate"]}


def run_ours(workdir: str, info: dict, n: int, chunk_rows: int, seed: int) -> dict:
    import pandas as pd

    from e2i_pipelines.analytics.twins.copula import fit_copula
    from e2i_pipelines.analytics.twins.fidelity import FidelityAccumulator
    from e2i_pipelines.analytics.twins.interventions import simulate_policies
    from e2i_pipelines.analytics.twins.targeting import TargetingRule
    from e2i_pipelines.analytics.twins.twin_files import write_twins
    from e2i_pipelines.core.budget import n_jobs

    real = pd.read_parquet(Path(workdir) / "real.parquet", columns=info["columns"])
    c0, t0 = _cpu_s(), time.perf_counter()
    model = fit_copula(real, info["columns"], priority=[info["treatment"]], seed=seed)
    t1 = time.perf_counter()
    acc = FidelityAccumulator(real, model.numeric, model.discrete_names)
    path = Path(workdir) / f"ours_{n}.parquet"
    write_twins(model, n, path, chunk_rows=chunk_rows, seed=seed, on_chunk=acc.update,
                workers=n_jobs())
    fid = acc.report()
    t2 = time.perf_counter()
    report, _ = simulate_policies(str(path), info["model_ref"],
                                  TargetingRule(query=COVARIATE_TARGETING),
                                  treatment_column=info["treatment"], chunk_rows=chunk_rows,
                                  n_threads=n_jobs())
    t3 = time.perf_counter()
    cpu = _cpu_s() - c0
    path.unlink()
    return {"cpu_s": cpu, "fit_s": t1 - t0, "sample_s": t2 - t1, "intervene_s": t3 - t2, "total_s": t3 - t0,
            "ate": report["ate"], "ate_ci": (report["ate_ci_low"], report["ate_ci_high"]),
            "uplift_targeted": report["uplift_targeted"],
            "max_ks": fid["max_ks"], "max_corr_diff": fid["max_abs_corr_diff"],
            "max_freq_diff": fid["max_frequency_diff"], "peak_rss_mb": _peak_rss_mb(),
            "trees_used": report["trees_used_for_uplift"]}


def _label_encoded(real):
    import numpy as np
    import pandas as pd

    cats = {c: list(real[c].cat.categories) for c in real.columns
            if isinstance(real[c].dtype, pd.CategoricalDtype)}
    encoded = real.copy()
    for c in cats:
        encoded[c] = encoded[c].cat.codes.astype(np.float64)
    return encoded.astype(np.float64), cats


def _decode(twins, real, cats):
    """Round label-encoded categoricals and integer columns back into their value sets."""
    import numpy as np
    import pandas as pd

    for c, levels in cats.items():
        codes = np.clip(np.rint(twins[c].to_numpy()), 0, len(levels) - 1).astype(np.int64)
        twins[c] = pd.Categorical.from_codes(codes, levels)
    for c in real.columns:
        if c not in cats and pd.api.types.is_integer_dtype(real[c]):
            lo, hi = real[c].min(), real[c].max()
            twins[c] = np.clip(np.rint(twins[c].to_numpy()), lo, hi).astype(real[c].dtype)
    return twins


def _one_shot_uplift(info, twins):
    """booster.predict on all twins at once, treated and untreated (the stock way)."""
    from e2i_pipelines.analytics.twins.uplift import booster_uplift

    ref = info["model_ref"]
    return booster_uplift(ref.load_booster(), ref.model_frame(twins), info["treatment"])


def _finish(real, cats, info, twins, uplift, n, c0, t0, t1, t2, t3) -> dict:
    import numpy as np

    from e2i_pipelines.analytics.twins.fidelity import FidelityAccumulator

    cpu = _cpu_s() - c0
    treat = info["treatment"]
    acc = FidelityAccumulator(real, [c for c in real.columns if c not in cats and c != treat],
                              [*cats, treat])
    acc.update(twins)
    fid = acc.report()
    se = uplift.std(ddof=1) / np.sqrt(n)
    return {"cpu_s": cpu, "fit_s": t1 - t0, "sample_s": t2 - t1, "intervene_s": t3 - t2,
            "total_s": t3 - t0, "ate": float(uplift.mean()),
            "ate_ci": (uplift.mean() - 1.96 * se, uplift.mean() + 1.96 * se),
            "max_ks": fid["max_ks"], "max_corr_diff": fid["max_abs_corr_diff"],
            "max_freq_diff": fid["max_frequency_diff"], "peak_rss_mb": _peak_rss_mb()}


def run_copulas(workdir: str, info: dict, n: int, chunk_rows: int, seed: int,
                distribution: str = "copulas.univariate.GaussianUnivariate") -> dict:
    import numpy as np
    import pandas as pd
    from copulas.multivariate import GaussianMultivariate

    real = pd.read_parquet(Path(workdir) / "real.parquet", columns=info["columns"])
    encoded, cats = _label_encoded(real)
    np.random.seed(seed)
    c0, t0 = _cpu_s(), time.perf_counter()
    model = GaussianMultivariate(distribution=distribution or None)
    model.fit(encoded)
    t1 = time.perf_counter()
    twins = _decode(model.sample(n), real, cats)
    t2 = time.perf_counter()
    uplift = _one_shot_uplift(info, twins)
    t3 = time.perf_counter()
    return _finish(real, cats, info, twins, uplift, n, c0, t0, t1, t2, t3)


def run_naive(workdir: str, info: dict, n: int, chunk_rows: int, seed: int) -> dict:
    import numpy as np
    import pandas as pd
    from scipy import special, stats

    real = pd.read_parquet(Path(workdir) / "real.parquet", columns=info["columns"])
    encoded, cats = _label_encoded(real)
    values = encoded.to_numpy()
    rng = np.random.default_rng(seed)
    c0, t0 = _cpu_s(), time.perf_counter()
    scores = special.ndtri(stats.rankdata(values, axis=0) / (len(values) + 1))
    corr = np.corrcoef(scores, rowvar=False)
    t1 = time.perf_counter()
    u = special.ndtr(rng.multivariate_normal(np.zeros(len(corr)), corr, size=n))
    ordered = np.sort(values, axis=0)  # empirical ppf: interpolate the order statistics
    grid = np.arange(len(ordered)) / (len(ordered) - 1)
    twins = pd.DataFrame({c: np.interp(u[:, j], grid, ordered[:, j])
                          for j, c in enumerate(encoded.columns)})
    twins = _decode(twins, real, cats)
    t2 = time.perf_counter()
    uplift = _one_shot_uplift(info, twins)
    t3 = time.perf_counter()
    return _finish(real, cats, info, twins, uplift, n, c0, t0, t1, t2, t3)


SIDES = {"ours": run_ours, "copulas": run_copulas, "naive": run_naive}


def _child(side: str, args: tuple, queue, mem_cap_gb: float, extra: dict) -> None:
    try:
        if mem_cap_gb > 0:  # a MemoryError here instead of the kernel OOM-killing neighbours
            cap = int(mem_cap_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        queue.put(("ok", SIDES[side](*args, **extra)))
    except BaseException:  # noqa: BLE001 - report any failure (incl. MemoryError) to the parent
        queue.put(("error", traceback.format_exc(limit=3)))


def run_side(side: str, args: tuple, timeout_s: float, mem_cap_gb: float = 0.0,
             extra: dict | None = None) -> dict:
    """Run one side in a fresh process; returns its result or the reason it has none."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(side, args, queue, mem_cap_gb, extra or {}))
    started = time.perf_counter()
    proc.start()
    try:
        status, payload = queue.get(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - queue.Empty on timeout
        proc.kill()
        proc.join()
        return {"error": f"timed out after {timeout_s:.0f} s", "wall_s": time.perf_counter() - started}
    except BaseException:
        proc.kill()
        raise
    proc.join()
    if status != "ok":
        return {"error": payload.strip().splitlines()[-1], "wall_s": time.perf_counter() - started}
    payload["wall_s"] = time.perf_counter() - started
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--fit-rows", type=int, default=200_000)
    parser.add_argument("--chunk-rows", type=int, default=250_000)
    parser.add_argument("--timeout", type=float, default=1_800.0, help="per side and size, s")
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=list(SIDES))
    parser.add_argument("--copulas-max-rows", type=int, default=10_000_000,
                        help="skip the copulas side above this N")
    parser.add_argument("--copulas-distribution", default="copulas.univariate.GaussianUnivariate",
                        help="univariate of GaussianMultivariate ('' = library default selection)")
    parser.add_argument("--copulas-mem-gb", type=float, default=8.0,
                        help="address-space cap of the copulas side (0: none)")
    parser.add_argument("--naive-mem-gb", type=float, default=12.0,
                        help="address-space cap of the naive side (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_twins_"))
    try:
        info = prepare(workdir, args.fit_rows, args.seed)
        print(f"# E2I data: fit sample {args.fit_rows:,} rows x {len(info['columns'])} columns; "
              f"LightGBM 200 trees / 31 leaves; true ATE {info['true_ate']:.3f}; "
              f"E2I_N_JOBS={os.environ.get('E2I_N_JOBS', 'all')}; cpus={os.cpu_count()}")
        print(f"# load before: {os.getloadavg()}")
        header = ("| N | side | fit s | sample s | intervene s | total s | CPU s | twins/s "
                  "(wall) | twins/CPU-s | peak RSS MB | ATE [95% CI] | max KS | max corr diff "
                  "| max freq diff |")
        print(header)
        print("|" + "---|" * 14)
        for n in args.sizes:
            results = {}
            for side in args.sides:
                if side == "copulas" and n > args.copulas_max_rows:
                    print(f"| {n:,} | copulas | skipped (--copulas-max-rows "
                          f"{args.copulas_max_rows:,}) |")
                    continue
                cap = {"copulas": args.copulas_mem_gb, "naive": args.naive_mem_gb}.get(side, 0.0)
                extra = ({"distribution": args.copulas_distribution} if side == "copulas"
                         else {})
                r = run_side(side, (str(workdir), info, n, args.chunk_rows, args.seed),
                             args.timeout, cap, extra)
                results[side] = r
                if "error" in r:
                    print(f"| {n:,} | {side} | failed: {r['error']} after {r['wall_s']:.0f} s |")
                    continue
                lo, hi = r["ate_ci"]
                print(f"| {n:,} | {side} | {r['fit_s']:.1f} | {r['sample_s']:.1f} | "
                      f"{r['intervene_s']:.1f} | {r['total_s']:.1f} | {r['cpu_s']:.1f} | "
                      f"{n / r['total_s']:,.0f} | {n / r['cpu_s']:,.0f} | "
                      f"{r['peak_rss_mb']:,.0f} | {r['ate']:.3f} [{lo:.3f}, {hi:.3f}] | "
                      f"{r['max_ks']:.4f} | {r['max_corr_diff']:.4f} | {r['max_freq_diff']:.4f} |",
                      flush=True)
            ours = results.get("ours", {})
            for other, r in results.items():
                if other != "ours" and "total_s" in r and "total_s" in ours:
                    print(f"| {n:,} | {other}/ours | | | | x{r['total_s'] / ours['total_s']:.1f} "
                          f"| x{r['cpu_s'] / ours['cpu_s']:.1f} | | | "
                          f"x{r['peak_rss_mb'] / ours['peak_rss_mb']:.1f} | | | | |", flush=True)
        print(f"# load after: {os.getloadavg()}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
