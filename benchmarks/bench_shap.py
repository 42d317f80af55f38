"""Exact SHAP throughput and peak memory: ours (chunked, bounded) vs shap.TreeExplainer.

Trains a 200-tree, 31-leaf LightGBM on 30 synthetic features, writes each population size
to Parquet, then in fresh 'spawn' subprocesses (so peak RSS is per side) runs
  * ours: ``explain_parquet`` (chunked read -> fast TreeSHAP -> Parquet writer), and
  * stock: ``shap.TreeExplainer(booster).shap_values(X)`` on the same rows (all in memory),
and prints rows/s, peak RSS, the speed ratio and the max abs difference.

    python benchmarks/bench_shap.py                      # 100k and 1M rows, stock on all rows
    python benchmarks/bench_shap.py --sizes 100000 --stock-rows 20000

With ``--stock-rows N`` the stock side runs on the first N rows only and its rows/s is
extrapolated to the full size (the output says so); the difference is taken on those rows.
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

    names = [f"f{i}" for i in range(N_FEATURES)]
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


def run_ours(model: str, data: str, out: str, chunk_rows: int, threads: int) -> dict:
    """Child process: chunked fast TreeSHAP over the Parquet file into Parquet."""
    import lightgbm as lgb

    from e2i_pipelines.analytics.explain.stream import explain_parquet
    from e2i_pipelines.analytics.explain.treeshap import TreeShapExplainer

    booster = lgb.Booster(model_file=model)
    explainer = TreeShapExplainer(booster, "fast", n_threads=threads)
    explainer.shap_values(np.zeros((8, N_FEATURES)))  # JIT compile/load outside the timing
    before = _peak_rss_mb()
    started, cpu = time.perf_counter(), _cpu_seconds()
    result = explain_parquet(explainer, data, out, "row_id", lambda f: f[booster.feature_name()],
                             chunk_rows=chunk_rows, sample_rows=5_000)
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    return {"rows": result.rows, "seconds": seconds, "cpu": cpu, "peak_rss_mb": _peak_rss_mb(),
            "rss_before_mb": before, "additivity": result.max_additivity_error,
            "table_mb": explainer.table_mb}


def run_stock(model: str, data: str, rows: int, out: str) -> dict:
    """Child: shap.TreeExplainer on the first ``rows`` rows in memory (LightGBM: all cores)."""
    import lightgbm as lgb
    import pyarrow.parquet as pq
    import shap

    booster = lgb.Booster(model_file=model)
    names = booster.feature_name()
    parts, left = [], rows
    for batch in pq.ParquetFile(data).iter_batches(batch_size=min(rows, 100_000), columns=names):
        parts.append(np.column_stack([batch.column(c).to_numpy() for c in names])[:left])
        left -= len(parts[-1])
        if left <= 0:
            break
    X = np.concatenate(parts)
    del parts
    explainer = shap.TreeExplainer(booster)
    before = _peak_rss_mb()
    started, cpu = time.perf_counter(), _cpu_seconds()
    values = np.asarray(explainer.shap_values(X))
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    np.save(out, values)
    return {"rows": len(X), "seconds": seconds, "cpu": cpu, "peak_rss_mb": _peak_rss_mb(),
            "rss_before_mb": before}


def in_child(fn, *args) -> dict:
    """Run ``fn`` in a fresh spawned interpreter; its peak RSS is its own."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def max_diff(ours_path: str, stock_path: str, rows: int) -> float:
    import pyarrow.parquet as pq

    stock = np.load(stock_path, mmap_mode="r")
    names = [f"f{i}" for i in range(N_FEATURES)]
    worst, start = 0.0, 0
    for batch in pq.ParquetFile(ours_path).iter_batches(batch_size=100_000, columns=names):
        if start >= rows:
            break
        ours = np.column_stack([batch.column(c).to_numpy() for c in names])[: rows - start]
        worst = max(worst, float(np.max(np.abs(ours - stock[start:start + len(ours)]))))
        start += len(ours)
    return worst



def train_model(work: Path, threads: int):
    """The benchmark's LightGBM model (N_TREES trees, N_LEAVES leaves) saved as work/model.txt;
    returns the booster and the file's path."""
    import lightgbm as lgb

    X, y = synthetic(TRAIN_ROWS, seed=0)
    booster = lgb.train({"objective": "regression", "num_leaves": N_LEAVES, "verbose": -1,
                         "num_threads": threads, "seed": 0},
                        lgb.Dataset(X, y, feature_name=[f"f{i}" for i in range(N_FEATURES)]),
                        num_boost_round=N_TREES)
    model = str(work / "model.txt")
    booster.save_model(model)
    return booster, model

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument("--stock-rows", type=int, default=0,
                        help="time the stock side on the first N rows only (0 = all) and "
                             "extrapolate its rows/s")
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=0, help="0 = e2i n_jobs()")
    parser.add_argument("--workdir", default="", help="where data/model go (default: temp)")
    args = parser.parse_args()


    from e2i_pipelines.core.budget import n_jobs

    threads = args.threads or n_jobs()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_shap_"))
    work.mkdir(parents=True, exist_ok=True)
    booster, model = train_model(work, threads)
    print(f"model: {booster.num_trees()} trees, {N_LEAVES} leaves, {N_FEATURES} features; "
          f"threads {threads}; load average {os.getloadavg()[0]:.1f} (cpus {os.cpu_count()})")

    rows_out = []
    for n in sizes:
        data = str(work / f"pop_{n}.parquet")
        write_population(Path(data), n, seed=1)
        ours = in_child(run_ours, model, data, str(work / f"shap_{n}.parquet"),
                        args.chunk_rows, threads)
        stock_n = min(n, args.stock_rows) if args.stock_rows else n
        stock = in_child(run_stock, model, data, stock_n, str(work / f"stock_{n}.npy"))
        diff = max_diff(str(work / f"shap_{n}.parquet"), str(work / f"stock_{n}.npy"), stock_n)
        ours_rate = ours["rows"] / ours["seconds"]
        stock_rate = stock["rows"] / stock["seconds"]
        note = "" if stock_n == n else f" (timed on {stock_n:,} rows, extrapolated)"
        rows_out.append((n, ours, stock, ours_rate, stock_rate, diff, note))
        print(f"\n== {n:,} rows (load {os.getloadavg()[0]:.1f})")
        print(f"ours  (fast, chunk {args.chunk_rows:,}): {ours['seconds']:.1f}s, "
              f"{ours_rate:,.0f} rows/s, peak RSS {ours['peak_rss_mb']:,.0f} MB "
              f"(before run {ours['rss_before_mb']:,.0f} MB, tables {ours['table_mb']:.0f} MB), "
              f"max additivity error {ours['additivity']:.1e}")
        print(f"stock (shap.TreeExplainer): {stock['seconds']:.1f}s on {stock['rows']:,} rows, "
              f"{stock_rate:,.0f} rows/s{note}, est. {n / stock_rate:,.0f}s for {n:,}, "
              f"peak RSS {stock['peak_rss_mb']:,.0f} MB for {stock['rows']:,} rows")
        print(f"CPU time: ours {ours['cpu']:.1f}s = {ours['rows'] / ours['cpu']:,.0f} rows/CPU-s; "
              f"stock {stock['cpu']:.1f}s = {stock['rows'] / stock['cpu']:,.0f} rows/CPU-s "
              f"(ratio {(ours['rows'] / ours['cpu']) / (stock['rows'] / stock['cpu']):.1f}x)")
        print(f"speed ratio ours/stock (wall): {ours_rate / stock_rate:.1f}x; "
              f"max |ours - stock| = {diff:.2e}")
        for f in (work / f"pop_{n}.parquet", work / f"shap_{n}.parquet", work / f"stock_{n}.npy"):
            f.unlink(missing_ok=True)

    print("\n| rows | ours s | ours rows/s | ours rows/CPU-s | ours peak RSS MB | stock rows/s "
          "| stock s (est.) | stock rows/CPU-s | stock peak RSS MB | ratio wall | ratio CPU "
          "| max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n, ours, stock, orate, srate, diff, note in rows_out:
        extrap = "*" if note else ""
        ocpu, scpu = ours["rows"] / ours["cpu"], stock["rows"] / stock["cpu"]
        print(f"| {n:,} | {ours['seconds']:.1f} | {orate:,.0f} | {ocpu:,.0f} | "
              f"{ours['peak_rss_mb']:,.0f} | {srate:,.0f}{extrap} | {n / srate:,.0f}{extrap} | "
              f"{scpu:,.0f} | {stock['peak_rss_mb']:,.0f} ({stock['rows']:,} rows) | "
              f"{orate / srate:.1f}x | {ocpu / scpu:.1f}x | {diff:.1e} |")
    if any(r[6] for r in rows_out):
        print("* stock timed on a prefix (--stock-rows) and extrapolated linearly")


if __name__ == "__main__":
    main()
