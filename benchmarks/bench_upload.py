"""Upload throughput of a large CSV through the API (``POST /v1/datasets``) and the API
process's peak RSS while it streams, validates and stores it.

    python benchmarks/bench_upload.py --mb 1024            # storage on local disk
    python benchmarks/bench_upload.py --mb 256 --s3        # storage on moto's S3 (loopback)

Starts ``python -m e2i_api`` (no Dagster needed), generates the CSV on disk (12 columns: ints,
floats, a category, some missing values), sends it as a chunked body and samples the API's RSS
every 20 ms. Prints ``UPLOAD mb=<size> seconds=<s> mb_s=<throughput> rss_start_mb=<m>
rss_peak_mb=<m> rows=<n> status=<http> storage=<side> load1=<1-min load average>``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.api.api_processes import ApiProcess, api_env  # noqa: E402
from tests.support.dagster_processes import free_port  # noqa: E402

KEY = "bench_upload_" + "k" * 40
KEYS = [{"name": "bench", "key": KEY, "scopes": ["runs:read", "runs:write"]}]


def write_csv(path: Path, megabytes: int, seed: int = 0) -> int:
    """A CSV of about ``megabytes`` MiB; its row count."""
    rng = np.random.default_rng(seed)
    rows = 0
    with path.open("w") as handle:
        handle.write("id,t,y,x0,x1,x2,x3,x4,x5,segment,tenure,score\n")
        while handle.tell() < megabytes << 20:
            n = 50_000
            x = rng.normal(size=(n, 6)).round(6)
            y = np.where(rng.random(n) < 0.01, np.nan, x[:, 0] * 2 + rng.normal(size=n)).round(6)
            seg = rng.choice(np.array(["smb", "mid", "ent"]), n)
            block = np.column_stack([np.arange(rows, rows + n), rng.integers(0, 2, n), y, x, seg,
                                     rng.integers(0, 120, n), rng.random(n).round(4)])
            handle.write("\n".join(",".join(r).replace("nan", "") for r in block.astype(str)) + "\n")
            rows += n
    return rows


def chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(size):
            yield chunk


@dataclass
class Rss:
    """RSS of the API process in bytes: at start (before any request) and the peak so far."""

    start: int
    peak: int


@contextlib.contextmanager
def sampled_api(env: dict[str, str], keys: list[dict], log: Path) -> Iterator[tuple[ApiProcess, Rss]]:
    """``python -m e2i_api`` with ``env`` and ``keys``, its RSS sampled every 20 ms until exit."""
    server = ApiProcess(free_port(), {**api_env(free_port(), keys), **env}, log).start()
    try:
        proc = psutil.Process(server.proc.pid)
        rss = Rss(proc.memory_info().rss, proc.memory_info().rss)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(psutil.Error):
                    rss.peak = max(rss.peak, proc.memory_info().rss)
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield server, rss
        finally:
            stop.set()
            sampler.join()
    finally:
        server.stop()


@contextlib.contextmanager
def storage(base: Path, s3: bool) -> Iterator[dict[str, str]]:
    env = {"E2I_DATA_DIR": str(base / "scratch"), "E2I_MAX_UPLOAD_BYTES": str(8 << 30)}
    if not s3:
        yield {**env, "E2I_STORAGE_URL": f"file://{base / 'store'}"}
        return
    from tests.support.s3 import CREDENTIALS, moto_server

    with moto_server() as server:
        yield {**env, **CREDENTIALS, "E2I_STORAGE_URL": server.url,
               "E2I_S3_ENDPOINT_URL": server.endpoint}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="CSV size in MiB")
    parser.add_argument("--s3", action="store_true", help="storage on moto's S3 server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="e2i-bench-upload-") as tmp:
        base = Path(tmp)
        csv = base / "upload.csv"
        rows = write_csv(csv, args.mb)
        size = csv.stat().st_size
        with storage(base, args.s3) as env, sampled_api(env, KEYS, base / "api.log") as (server, rss):
            began = time.perf_counter()
            response = httpx.post(f"{server.url}/v1/datasets", params={"name": "bench"},
                                  content=chunks(csv), timeout=3600,
                                  headers={"X-API-Key": KEY, "Content-Type": "text/csv"})
            seconds = time.perf_counter() - began
    body = response.json()
    assert response.status_code == 201 and body["rows"] == rows, response.text[:500]
    print(f"UPLOAD mb={size / 2**20:.0f} seconds={seconds:.1f} mb_s={size / 2**20 / seconds:.1f} "
          f"rss_start_mb={rss.start / 2**20:.0f} rss_peak_mb={rss.peak / 2**20:.0f} rows={rows} "
          f"status={response.status_code} storage={'s3' if args.s3 else 'local'} "
          f"load1={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
