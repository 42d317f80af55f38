"""Storage benchmark: the same asset runs with storage on local disk and on S3 (moto's server).

For SHAP (``shap_explanations`` on ``--shap-rows`` rows) and the twins (``digital_twins`` with
``--twins-rows`` twins): the dataset and the outcome model are written once to both stores, then
each side materializes the asset in a fresh 'spawn' subprocess with ``E2I_STORAGE_URL`` pointing
at its store (file:// or s3://) and Dagster's IO manager on that URL. moto's server runs in its
own process on 127.0.0.1. Printed per job: wall seconds and peak RSS of each side, and

    RATIO name=<job> rows=<n> ours_s=<s3 s> peer=local peer_s=<local s> ratio=<local/s3> agree=<yes|no>

``agree``: the output Parquet read back through the storage layer is identical on both sides.
Each run also prints its CPU seconds and the S3 server's (moto's) CPU seconds meanwhile: on a
machine with few cores, the stand-in server's CPU competes with the run's.

    python benchmarks/bench_storage.py --shap-rows 1000000 --twins-rows 10000000 [--repeat 3]

On a shared machine ``--repeat`` alternates the sides and reports the median wall time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memory import peak_rss_mb  # noqa: E402 - benchmarks/ is on sys.path

BUCKET = "bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto's S3 server in its own process on loopback, with the bucket created."""
    import boto3

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
    for _ in range(100):
        try:
            client.create_bucket(Bucket=BUCKET)
            return proc, endpoint
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def prepare(work: Path, rows: int, seed: int) -> tuple[str, str]:
    """Dataset (``rows`` rows) and a 200-tree outcome model, as local files."""
    import lightgbm as lgb

    from e2i_pipelines.data.synthetic import SPEC, generate_e2i

    frame, _ = generate_e2i(rows, seed=seed)
    frame.to_parquet(work / "data.parquet", row_group_size=250_000)
    feats = [SPEC.treatment, *SPEC.covariates]
    booster = lgb.train({"objective": "regression", "num_leaves": 31, "verbose": -1,
                         "num_threads": 2, "seed": seed},
                        lgb.Dataset(frame[feats], frame[SPEC.outcome]), 200)
    booster.save_model(str(work / "model.txt"))
    return str(work / "data.parquet"), str(work / "model.txt")


def _env(side: str, work: Path, endpoint: str) -> dict[str, str]:
    env = {"E2I_DATA_DIR": str(work / f"node-{side}"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow-{side}.db"}
    if side == "s3":
        env |= {**CREDENTIALS, "E2I_STORAGE_URL": f"s3://{BUCKET}/run",
                "E2I_S3_ENDPOINT_URL": endpoint}
    else:
        env |= {"E2I_STORAGE_URL": f"file://{work}/local-store"}
    return env


def upload_inputs(data: str, model: str, env: dict[str, str]) -> tuple[str, str]:
    """Copy the inputs into the side's store; their storage paths."""
    os.environ.update(env)
    from e2i_pipelines.core.storage import open_file, storage_root

    paths = []
    for local in (data, model):
        target = storage_root() / "inputs" / Path(local).name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(local, "rb") as source, open_file(target, "wb") as sink:
            shutil.copyfileobj(source, sink, 8 << 20)
        paths.append(str(target))
    return paths[0], paths[1]


def run_side(env: dict[str, str], job: str, data: str, model: str, rows: int,
             server_pid: int) -> dict:
    """Materialize ``job`` on the side's store (in a fresh process); wall s, peak RSS, digest."""
    os.environ.update(env)
    import dagster as dg

    from e2i_pipelines.core.refs import DatasetRef, ModelRef
    from e2i_pipelines.core.storage import E2IStorage, StorageIOManager, read_parquet
    from e2i_pipelines.core.tracking import MlflowTracker
    from e2i_pipelines.data.synthetic import SPEC
    from e2i_pipelines.defs.explain.assets import shap_explanations
    from e2i_pipelines.defs.twins.assets import digital_twins

    sample = read_parquet(data, columns=["region", "specialty"])
    cats = {c: list(sample[c].cat.categories) for c in sample.columns}
    feats = [SPEC.treatment, *SPEC.covariates]

    @dg.asset(name="dataset")
    def dataset_stub():  # noqa: ANN202 - local import: no string annotation for Dagster
        return DatasetRef(data, SPEC, len(sample), "hcp_id", None)

    @dg.asset(name="outcome_model")
    def model_stub():  # noqa: ANN202
        return ModelRef(model, feats, SPEC.treatment, SPEC.outcome, cats)

    target = shap_explanations if job == "shap_explanations" else digital_twins
    config = ({"chunk_rows": 50_000} if job == "shap_explanations"
              else {"n_twins": rows, "chunk_rows": 250_000, "seed": 1, "fit_rows": 200_000})
    start, cpu, server = time.perf_counter(), time.process_time(), cpu_seconds(server_pid)
    result = dg.materialize([dataset_stub, model_stub, target],
                            resources={"storage": E2IStorage(), "io_manager": StorageIOManager(),
                                       "mlflow": MlflowTracker()},
                            run_config={"ops": {job: {"config": config}}},
                            instance=dg.DagsterInstance.ephemeral())
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    server = cpu_seconds(server_pid) - server  # the S3 server's CPU during the run
    peak = peak_rss_mb()  # before the read-back below
    out = result.output_for_node(job)
    path = out["attributions_path"] if job == "shap_explanations" else out.path
    digest, rows = parquet_digest(path)
    from e2i_pipelines.core.storage import to_path

    out_path = to_path(path)
    files = [p for p in out_path.iterdir() if p.is_file()] if out_path.is_dir() else [out_path]
    size = sum(p.stat().st_size for p in files)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak, "digest": digest, "rows": rows,
            "mb": size / 1e6, "server_cpu_s": server}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parquet_digest(path: str) -> tuple[int, int]:
    """Order-sensitive digest of a Parquet output and its row count, one row group at a time."""
    import hashlib

    import pandas as pd

    from e2i_pipelines.core.storage import parquet_files

    digest, rows = hashlib.sha256(), 0
    for source in parquet_files(path):  # a file, or the twins' part files in order
        for group in range(source.num_row_groups):
            frame = source.read_row_group(group).to_pandas()
            digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
            rows += len(frame)
    return int.from_bytes(digest.digest()[:8], "big"), rows


def summary(runs: list[dict]) -> dict:
    """Median wall seconds and largest peak RSS of one side's runs."""
    import statistics

    return {"wall_s": statistics.median(r["wall_s"] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def in_child(fn, *args) -> dict:
    pool = mp.get_context("spawn").Pool(1)
    try:
        return pool.apply(fn, args)
    finally:
        pool.close()  # let the worker exit on its own (terminate() interrupts its threads)
        pool.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shap-rows", type=int, default=200_000)
    parser.add_argument("--twins-rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per side (alternating); the median wall and the largest RSS")
    parser.add_argument("--jobs", default="shap_explanations,digital_twins",
                        help="comma-separated subset of the two jobs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="e2i-bench-storage-"))
    moto, endpoint = start_moto()
    try:
        data, model = prepare(work, args.shap_rows, args.seed)
        inputs = {side: in_child(upload_inputs, data, model, _env(side, work, endpoint))
                  for side in ("local", "s3")}
        jobs = args.jobs.split(",")
        for job, rows in (("shap_explanations", args.shap_rows),
                          ("digital_twins", args.twins_rows)):
            if job not in jobs:
                continue
            runs: dict[str, list[dict]] = {"local": [], "s3": []}
            for _ in range(args.repeat):  # alternating sides, so a load change hits both
                for side in runs:
                    r = in_child(run_side, _env(side, work, endpoint), job, *inputs[side], rows,
                                 moto.pid)
                    runs[side].append(r)
                    print(f"{job} {side}: {r['wall_s']:.1f}s peak RSS {r['peak_rss_mb']:.0f} MB "
                          f"({r['rows']:,} output rows, {r['mb']:.0f} MB); run CPU "
                          f"{r['cpu_s']:.1f}s, S3 server CPU {r['server_cpu_s']:.1f}s", flush=True)
            s3, local = (summary(runs[side]) for side in ("s3", "local"))
            digests = {r["digest"] for side in runs.values() for r in side}
            agree = "yes" if len(digests) == 1 else "no"
            print(f"RATIO name={job} rows={rows} ours_s={s3['wall_s']:.2f} peer=local "
                  f"peer_s={local['wall_s']:.2f} ratio={local['wall_s'] / s3['wall_s']:.3f} "
                  f"agree={agree}", flush=True)
            print(f"{job}: peak RSS s3/local {s3['peak_rss_mb'] / local['peak_rss_mb']:.3f}, "
                  f"load1={os.getloadavg()[0]:.1f}", flush=True)
    finally:
        moto.kill()
        moto.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
