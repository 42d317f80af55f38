"""Digital twins benchmark: ours vs copulas.GaussianMultivariate, same data, one run.

Real-shaped data from the E2I generator (fit sample ``--fit-rows``), a LightGBM outcome model
(200 trees, 31 leaves) trained on it; then for each N in ``--sizes``:

* ours: fit the stratified copula, stream N twins to Parquet in chunks (with the fidelity
  report), then simulate treat-all / treat-none / targeting on the file (exact tree uplift);
* stock: ``copulas.GaussianMultivariate()`` (default univariate selection; categoricals
  label-encoded, decoded by rounding) fitted on the same rows, ``sample(N)`` in one shot, then
  ``booster.predict`` on all N twins treated and untreated.

Each side runs in a fresh 'spawn' subprocess; its peak RSS is that process's ru_maxrss.
Fidelity of both is measured with the same accumulator against the same real rows.

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

COVARIATE_TARGETING = "engagement_score > 0.5 and region == 'Northeast'"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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

    from e2i_pipelines.analytics.twins_copula import fit_copula, write_twins
    from e2i_pipelines.analytics.twins_fidelity import FidelityAccumulator
    from e2i_pipelines.analytics.twins_interventions import TargetingRule, simulate_policies
    from e2i_pipelines.core.budget import n_jobs

    real = pd.read_parquet(Path(workdir) / "real.parquet", columns=info["columns"])
    t0 = time.perf_counter()
    model = fit_copula(real, info["columns"], priority=[info["treatment"]], seed=seed)
    t1 = time.perf_counter()
    acc = FidelityAccumulator(real, model.numeric, model.discrete_names)
    path = Path(workdir) / f"ours_{n}.parquet"
    write_twins(model, n, path, chunk_rows=chunk_rows, seed=seed, on_chunk=acc.update)
    fid = acc.report()
    t2 = time.perf_counter()
    report, _ = simulate_policies(str(path), info["model_ref"],
                                  TargetingRule(query=COVARIATE_TARGETING),
                                  treatment_column=info["treatment"], chunk_rows=chunk_rows,
                                  n_threads=n_jobs())
    t3 = time.perf_counter()
    path.unlink()
    return {"fit_s": t1 - t0, "sample_s": t2 - t1, "intervene_s": t3 - t2, "total_s": t3 - t0,
            "ate": report["ate"], "ate_ci": (report["ate_ci_low"], report["ate_ci_high"]),
            "uplift_targeted": report["uplift_targeted"],
            "max_ks": fid["max_ks"], "max_corr_diff": fid["max_abs_corr_diff"],
            "max_freq_diff": fid["max_frequency_diff"], "peak_rss_mb": _peak_rss_mb(),
            "trees_used": report["trees_used_for_uplift"]}


def run_stock(workdir: str, info: dict, n: int, chunk_rows: int, seed: int) -> dict:
    import numpy as np
    import pandas as pd
    from copulas.multivariate import GaussianMultivariate

    from e2i_pipelines.analytics.twins_fidelity import FidelityAccumulator
    from e2i_pipelines.analytics.twins_uplift import with_treatment
    from e2i_pipelines.core.budget import n_jobs

    real = pd.read_parquet(Path(workdir) / "real.parquet", columns=info["columns"])
    cats = {c: list(real[c].cat.categories) for c in real.columns
            if isinstance(real[c].dtype, pd.CategoricalDtype)}
    encoded = real.copy()
    for c in cats:
        encoded[c] = encoded[c].cat.codes.astype(np.float64)
    encoded = encoded.astype(np.float64)
    np.random.seed(seed)
    t0 = time.perf_counter()
    model = GaussianMultivariate()
    model.fit(encoded)
    t1 = time.perf_counter()
    twins = model.sample(n)
    for c, levels in cats.items():
        codes = np.clip(np.rint(twins[c].to_numpy()), 0, len(levels) - 1).astype(np.int64)
        twins[c] = pd.Categorical.from_codes(codes, levels)
    for c in real.columns:
        if c not in cats and pd.api.types.is_integer_dtype(real[c]):
            lo, hi = real[c].min(), real[c].max()
            twins[c] = np.clip(np.rint(twins[c].to_numpy()), lo, hi).astype(real[c].dtype)
    t2 = time.perf_counter()
    ref = info["model_ref"]
    booster = ref.load_booster()
    frame = ref.model_frame(twins)
    treat = info["treatment"]
    uplift = (booster.predict(with_treatment(frame, treat, 1), num_threads=n_jobs())
              - booster.predict(with_treatment(frame, treat, 0), num_threads=n_jobs()))
    t3 = time.perf_counter()
    acc = FidelityAccumulator(real, [c for c in real.columns if c not in cats and c != treat],
                              [*cats, treat])
    acc.update(twins)
    fid = acc.report()
    se = uplift.std(ddof=1) / np.sqrt(n)
    return {"fit_s": t1 - t0, "sample_s": t2 - t1, "intervene_s": t3 - t2, "total_s": t3 - t0,
            "ate": float(uplift.mean()), "ate_ci": (uplift.mean() - 1.96 * se,
                                                    uplift.mean() + 1.96 * se),
            "uplift_targeted": float("nan"),
            "max_ks": fid["max_ks"], "max_corr_diff": fid["max_abs_corr_diff"],
            "max_freq_diff": fid["max_frequency_diff"], "peak_rss_mb": _peak_rss_mb(),
            "trees_used": booster.num_trees()}


def _child(side: str, args: tuple, queue) -> None:
    try:
        queue.put(("ok", {"ours": run_ours, "stock": run_stock}[side](*args)))
    except BaseException:  # noqa: BLE001 - report any failure (incl. MemoryError) to the parent
        queue.put(("error", traceback.format_exc(limit=3)))


def run_side(side: str, args: tuple, timeout_s: float) -> dict:
    """Run one side in a fresh process; returns its result or the reason it has none."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(side, args, queue))
    started = time.perf_counter()
    proc.start()
    try:
        status, payload = queue.get(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - queue.Empty on timeout
        proc.kill()
        proc.join()
        return {"error": f"timed out after {timeout_s:.0f} s", "wall_s": time.perf_counter() - started}
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
    parser.add_argument("--stock-max-rows", type=int, default=10_000_000,
                        help="skip the stock side above this N")
    parser.add_argument("--timeout", type=float, default=1_800.0, help="per side and size, s")
    parser.add_argument("--sides", nargs="+", default=["ours", "stock"], choices=["ours", "stock"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_twins_"))
    try:
        info = prepare(workdir, args.fit_rows, args.seed)
        print(f"# E2I data: fit sample {args.fit_rows:,} rows x {len(info['columns'])} columns; "
              f"LightGBM 200 trees / 31 leaves; true ATE {info['true_ate']:.3f}; "
              f"E2I_N_JOBS={os.environ.get('E2I_N_JOBS', 'all')}; cpus={os.cpu_count()}")
        print(f"# load before: {os.getloadavg()}")
        header = ("| N | side | fit s | sample s | intervene s | total s | twins/s | peak RSS MB "
                  "| ATE [95% CI] | max KS | max corr diff | max freq diff |")
        print(header)
        print("|" + "---|" * 12)
        for n in args.sizes:
            results = {}
            for side in args.sides:
                if side == "stock" and n > args.stock_max_rows:
                    print(f"| {n:,} | stock | skipped (--stock-max-rows {args.stock_max_rows:,}) |")
                    continue
                r = run_side(side, (str(workdir), info, n, args.chunk_rows, args.seed),
                             args.timeout)
                results[side] = r
                if "error" in r:
                    print(f"| {n:,} | {side} | failed: {r['error']} after {r['wall_s']:.0f} s |")
                    continue
                lo, hi = r["ate_ci"]
                print(f"| {n:,} | {side} | {r['fit_s']:.1f} | {r['sample_s']:.1f} | "
                      f"{r['intervene_s']:.1f} | {r['total_s']:.1f} | {n / r['total_s']:,.0f} | "
                      f"{r['peak_rss_mb']:,.0f} | {r['ate']:.3f} [{lo:.3f}, {hi:.3f}] | "
                      f"{r['max_ks']:.4f} | {r['max_corr_diff']:.4f} | {r['max_freq_diff']:.4f} |",
                      flush=True)
            ours, stock = results.get("ours", {}), results.get("stock", {})
            if "total_s" in ours and "total_s" in stock:
                print(f"| {n:,} | ratio | | | | speed-up x{stock['total_s'] / ours['total_s']:.1f} "
                      f"| | memory x{stock['peak_rss_mb'] / ours['peak_rss_mb']:.1f} | | | | |")
        print(f"# load after: {os.getloadavg()}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
