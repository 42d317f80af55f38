"""Exact SHAP throughput and peak memory: ours (chunked, bounded) vs WOODELF vs shap.

Trains a 200-tree, 31-leaf LightGBM on 30 synthetic features, writes each population size
to Parquet, samples one seeded background of ``--background-rows`` rows (interventional),
then in fresh 'spawn' subprocesses (so peak RSS is per side) runs, per perturbation:
  * ours: ``explain_parquet`` (chunked read -> fast TreeSHAP -> additivity check -> Parquet
    writer), the ``shap_explanations`` asset's path;
  * woodelf: ``woodelf.WoodelfExplainer(...).shap_values(X)`` (woodelf-explainer, bench extra);
  * shap: ``shap.TreeExplainer`` (path-dependent: LightGBM pred_contrib; interventional:
    shap's tree_shap_indep with the same background, all rows kept by the masker),
all in memory but ours, and prints rows/s, rows/CPU-s, peak RSS, the speed ratios (same
run) and the max abs difference to ours.

    python benchmarks/bench_shap.py --sizes 100000,1000000 --stock-rows 100000 \
        --shap-int-rows 2000

``--stock-rows``, ``--woodelf-rows`` and ``--shap-int-rows`` time that side on the first N
rows only and extrapolate its rows/s (marked *); the difference is taken on those rows.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from memory import peak_rss_mb as _peak_rss_mb  # noqa: E402 - benchmarks/ is on sys.path

N_FEATURES, N_TREES, N_LEAVES, TRAIN_ROWS = 30, 200, 31, 50_000
NAMES = [f"f{i}" for i in range(N_FEATURES)]
def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """30 correlated features (a few NaNs), nonlinear target with interactions."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, N_FEATURES))
    X = z + 0.3 * z[:, [0]]
    X[:, 25:] = np.round(np.abs(X[:, 25:]) * 3)  # small-integer, count-like columns
    y = (X[:, :8].sum(axis=1) + np.sin(2 * X[:, 8:16]).sum(axis=1) + X[:, 16] * X[:, 17]
         + np.where(X[:, 18] > 0, X[:, 19], -X[:, 20]) + 0.5 * X[:, 25:].sum(axis=1)
         + rng.normal(size=n))
    X[rng.random((n, N_FEATURES)) < 0.02] = np.nan
    return X, y


def write_population(path: Path, n: int, seed: int, chunk: int = 250_000) -> None:
    """Write ``n`` rows (id + f0..f29) to Parquet in chunks."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = NAMES
    writer = None
    for start in range(0, n, chunk):
        X, _ = synthetic(min(chunk, n - start), seed + start)
        cols = {"row_id": np.arange(start, start + len(X), dtype=np.int64)}
        cols.update({name: X[:, j] for j, name in enumerate(names)})
        table = pa.table(cols)
        writer = writer or pq.ParquetWriter(str(path), table.schema)
        writer.write_table(table)
    writer.close()


def _cpu_seconds() -> float:
    """CPU time of this process, all threads (robust to other load on shared cores)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_rows(data: str, rows: int) -> np.ndarray:
    """The first ``rows`` rows of the model columns as a float64 matrix."""
    import pyarrow.parquet as pq

    parts, left = [], rows
    for batch in pq.ParquetFile(data).iter_batches(batch_size=min(rows, 100_000), columns=NAMES):
        parts.append(np.column_stack([batch.column(c).to_numpy() for c in NAMES])[:left])
        left -= len(parts[-1])
        if left <= 0:
            break
    return np.concatenate(parts)


def _timed(fn, rows: int) -> dict:
    """Run ``fn()`` and measure wall, CPU and peak RSS (before and after)."""
    before = _peak_rss_mb()
    started, cpu = time.perf_counter(), _cpu_seconds()
    out = fn()
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    return {"rows": rows, "seconds": seconds, "cpu": cpu, "peak_rss_mb": _peak_rss_mb(),
            "rss_before_mb": before, "out": out}


def run_ours(model: str, data: str, out: str, chunk_rows: int, threads: int,
             perturbation: str, background: str) -> dict:
    """Child process: chunked fast TreeSHAP over the Parquet file into Parquet."""
    import lightgbm as lgb

    from e2i_pipelines.analytics.explain.stream import explain_parquet
    from e2i_pipelines.analytics.explain.treeshap import TreeShapExplainer

    booster = lgb.Booster(model_file=model)
    bg = np.load(background) if perturbation == "interventional" else None
    warm = TreeShapExplainer(booster, "fast", feature_perturbation=perturbation,
                             background=None if bg is None else bg[:8])
    warm.shap_values(np.zeros((8, N_FEATURES)))  # JIT compile/load outside the timing
    setup = {}

    def explain():  # table (and background) building is timed: it is part of the work
        started = time.perf_counter()
        explainer = TreeShapExplainer(booster, "fast", n_threads=threads,
                                      feature_perturbation=perturbation, background=bg)
        setup.update(seconds=time.perf_counter() - started, table_mb=explainer.table_mb)
        return explain_parquet(explainer, data, out, "row_id", lambda f: f[booster.feature_name()],
                               chunk_rows=chunk_rows, sample_rows=5_000)

    res = _timed(explain, 0)
    result = res.pop("out")
    res.update(rows=result.rows, additivity=result.max_additivity_error,
               table_mb=setup["table_mb"], setup_s=setup["seconds"])
    return res


def run_woodelf(model: str, data: str, rows: int, out: str, perturbation: str,
                background: str) -> dict:
    """Child: woodelf.WoodelfExplainer on the first ``rows`` rows in memory."""
    import lightgbm as lgb
    import pandas as pd
    from woodelf import WoodelfExplainer

    booster = lgb.Booster(model_file=model)
    X = pd.DataFrame(load_rows(data, rows), columns=NAMES)
    bg = (pd.DataFrame(np.load(background), columns=NAMES)
          if perturbation == "interventional" else None)

    def explain():
        return np.asarray(WoodelfExplainer(booster, data=bg, feature_perturbation=perturbation)
                          .shap_values(X, verbose=False))

    res = _timed(explain, len(X))
    np.save(out, res.pop("out"))
    return res


def run_shap(model: str, data: str, rows: int, out: str, perturbation: str,
             background: str) -> dict:
    """Child: shap.TreeExplainer on the first ``rows`` rows in memory (path-dependent:
    LightGBM pred_contrib on all cores; interventional: every background row)."""
    import lightgbm as lgb
    import shap

    booster = lgb.Booster(model_file=model)
    X = load_rows(data, rows)
    if perturbation == "interventional":
        bg = np.load(background)
        explainer = shap.TreeExplainer(
            booster, data=shap.maskers.Independent(bg, max_samples=len(bg)),
            feature_perturbation="interventional")
    else:
        explainer = shap.TreeExplainer(booster)
    res = _timed(lambda: np.asarray(explainer.shap_values(X)), len(X))
    np.save(out, res.pop("out"))
    return res


def in_child(fn, *args) -> dict:
    """Run ``fn`` in a fresh spawned interpreter; its peak RSS is its own."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def max_diff(ours_path: str, other_path: str, rows: int) -> float:
    """max |ours - other| over the first ``rows`` rows."""
    import pyarrow.parquet as pq

    other = np.load(other_path, mmap_mode="r")
    worst, start = 0.0, 0
    for batch in pq.ParquetFile(ours_path).iter_batches(batch_size=100_000, columns=NAMES):
        if start >= rows:
            break
        ours = np.column_stack([batch.column(c).to_numpy() for c in NAMES])[: rows - start]
        worst = max(worst, float(np.max(np.abs(ours - other[start:start + len(ours)]))))
        start += len(ours)
    return worst


def train_model(work: Path, threads: int):
    """The benchmark's LightGBM model (N_TREES trees, N_LEAVES leaves) saved as work/model.txt;
    returns the booster and the file's path."""
    import lightgbm as lgb

    X, y = synthetic(TRAIN_ROWS, seed=0)
    booster = lgb.train({"objective": "regression", "num_leaves": N_LEAVES, "verbose": -1,
                         "num_threads": threads, "seed": 0},
                        lgb.Dataset(X, y, feature_name=NAMES), num_boost_round=N_TREES)
    model = str(work / "model.txt")
    booster.save_model(model)
    return booster, model


def write_background(data: str, rows: int, out: Path) -> str:
    """A seeded uniform background sample of the population, as the asset draws it."""
    from e2i_pipelines.analytics.explain.background import sample_background

    np.save(out, sample_background(data, NAMES, rows, seed=0).to_numpy(dtype=np.float64))
    return str(out)


def _side_rows(n: int, limit: int) -> int:
    return min(n, limit) if limit else n


def bench_size(args, work: Path, model: str, n: int, threads: int) -> list[dict]:
    """All sides of every perturbation on ``n`` rows; one result dict per side."""
    data = str(work / f"pop_{n}.parquet")
    write_population(Path(data), n, seed=1)
    background = write_background(data, args.background_rows, work / "background.npy")
    results = []
    for pert in args.perturbations.split(","):
        ours_out = str(work / f"shap_{pert}_{n}.parquet")
        ours = in_child(run_ours, model, data, ours_out, args.chunk_rows, threads, pert,
                        background)
        ours.update(side="ours", pert=pert, n=n, diff=0.0, timed=ours["rows"])
        results.append(ours)
        limits = {"woodelf": args.woodelf_rows,
                  "shap": args.stock_rows if pert == "tree_path_dependent" else args.shap_int_rows}
        for side, fn in (("woodelf", run_woodelf), ("shap", run_shap)):
            if side not in args.sides:
                continue
            rows = _side_rows(n, limits[side])
            out = str(work / f"{side}_{pert}_{n}.npy")
            res = in_child(fn, model, data, rows, out, pert, background)
            res.update(side=side, pert=pert, n=n, diff=max_diff(ours_out, out, rows), timed=rows)
            results.append(res)
            Path(out).unlink(missing_ok=True)
        Path(ours_out).unlink(missing_ok=True)
        _print_block([r for r in results if r["pert"] == pert and r["n"] == n], args,
                     os.getloadavg()[0])
    Path(data).unlink(missing_ok=True)
    return results


def _print_block(block: list[dict], args, load: float) -> None:
    ours = block[0]
    rate = ours["rows"] / ours["seconds"]
    print(f"\n== {ours['n']:,} rows, {ours['pert']} (load {load:.1f})")
    print(f"ours (chunk {args.chunk_rows:,}): {ours['seconds']:.1f}s, {rate:,.0f} rows/s, "
          f"peak RSS {ours['peak_rss_mb']:,.0f} MB (tables {ours['table_mb']:.0f} MB, table "
          f"setup {ours['setup_s']:.2f}s of it), max additivity error {ours['additivity']:.1e}")
    for side in block[1:]:
        srate = side["rows"] / side["seconds"]
        note = "" if side["timed"] == ours["n"] else " (prefix, extrapolated)"
        print(f"{side['side']}: {side['seconds']:.1f}s on {side['rows']:,} rows, {srate:,.0f} "
              f"rows/s{note}; ours/{side['side']} {rate / srate:.1f}x wall, "
              f"{(ours['rows'] / ours['cpu']) / (side['rows'] / side['cpu']):.1f}x CPU; "
              f"max |ours - {side['side']}| = {side['diff']:.1e}")


def print_table(results: list[dict]) -> None:
    """Markdown table of every side, with ratios against ours of the same size and run."""
    print("\n| perturbation | rows | side | s | rows/s | rows/CPU-s | peak RSS MB | ours/side "
          "wall | ours/side CPU | max abs diff to ours |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ours = {(r["pert"], r["n"]): r for r in results if r["side"] == "ours"}
    for r in results:
        o = ours[(r["pert"], r["n"])]
        rate, cpu_rate = r["rows"] / r["seconds"], r["rows"] / r["cpu"]
        star = "*" if r["timed"] < r["n"] else ""
        ratio = (o["rows"] / o["seconds"]) / rate
        cpu_ratio = (o["rows"] / o["cpu"]) / cpu_rate
        print(f"| {r['pert']} | {r['n']:,} | {r['side']} | {r['seconds']:.1f} | "
              f"{rate:,.0f}{star} | {cpu_rate:,.0f} | {r['peak_rss_mb']:,.0f} | {ratio:.1f}x | "
              f"{cpu_ratio:.1f}x | {r['diff']:.1e} |")
    if any(r["timed"] < r["n"] for r in results):
        print("* timed on a prefix of the rows and extrapolated linearly")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument("--perturbations", default="tree_path_dependent,interventional")
    parser.add_argument("--background-rows", type=int, default=1_000)
    parser.add_argument("--stock-rows", type=int, default=0,
                        help="shap path-dependent on the first N rows only (0 = all)")
    parser.add_argument("--shap-int-rows", type=int, default=2_000,
                        help="shap interventional on the first N rows only (0 = all; slow)")
    parser.add_argument("--woodelf-rows", type=int, default=0,
                        help="WOODELF on the first N rows only (0 = all)")
    parser.add_argument("--sides", default="woodelf,shap",
                        help="sides besides ours: woodelf, shap (comma-separated)")
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=0, help="0 = e2i n_jobs()")
    parser.add_argument("--workdir", default="", help="where data/model go (default: temp)")
    args = parser.parse_args()

    from e2i_pipelines.core.budget import n_jobs

    threads = args.threads or n_jobs()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_shap_"))
    work.mkdir(parents=True, exist_ok=True)
    booster, model = train_model(work, threads)
    print(f"model: {booster.num_trees()} trees, {N_LEAVES} leaves, {N_FEATURES} features; "
          f"threads {threads}; background {args.background_rows:,} rows; load average "
          f"{os.getloadavg()[0]:.1f} (cpus {os.cpu_count()})")
    results = []
    for n in (int(s) for s in args.sizes.split(",") if s):
        results += bench_size(args, work, model, n, threads)
    print_table(results)


if __name__ == "__main__":
    main()
