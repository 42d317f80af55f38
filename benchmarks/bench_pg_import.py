"""Import throughput of a Postgres table through the API (``POST /v1/datasets``, ``source:
postgres``) and the API process's peak RSS while rows stream through the server-side cursor.

    flock /tmp/e2i-heavy.lock python benchmarks/bench_pg_import.py --rows 10000000

Needs the local Postgres (scripts/start_services.sh). Makes a fresh database with a generated
table (10 columns: ints, floats with 1 % missing, a category, a date), a read-only role and a
connections file, starts ``python -m e2i_api`` (no Dagster needed) with storage on local disk,
imports the table and samples the API's RSS every 20 ms. Prints ``PG_IMPORT rows=<n>
seconds=<s> rows_s=<throughput> rss_start_mb=<m> rss_peak_mb=<m> parquet_mb=<m> status=<http>
load1=<1-min load average>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
from psycopg2 import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_upload import sampled_api  # noqa: E402
from tests.api.test_dataset_postgres import pg_source  # noqa: E402

KEY = "bench_pg_import_" + "k" * 40
KEYS = [{"name": "bench", "key": KEY, "scopes": ["runs:read", "runs:write"]}]


def make_table(pg: dict, rows: int) -> None:
    with pg["admin"].cursor() as cur:
        cur.execute(
            "CREATE TABLE big AS SELECT i AS id, (i %% 2) AS t, "
            "CASE WHEN i %% 100 = 0 THEN NULL ELSE random() * 10 END AS y, random() AS x0, "
            "random() AS x1, random() AS x2, random() AS x3, (ARRAY['smb', 'mid', 'ent'])[i %% 3 + 1] AS segment, "
            "(i %% 120) AS tenure, DATE '2020-01-01' + (i %% 1000) AS joined FROM generate_series(1, %s) i",
            (rows,))
        cur.execute(sql.SQL("GRANT SELECT ON big TO {}").format(sql.Identifier(pg["role"])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="e2i-bench-pg-") as tmp:
        base = Path(tmp)
        with pg_source(base, timeout_s=600) as pg:
            make_table(pg, args.rows)
            env = {"E2I_DATA_DIR": str(base / "scratch"), "E2I_STORAGE_URL": f"file://{base / 'store'}",
                   "E2I_MAX_UPLOAD_BYTES": str(8 << 30), "E2I_PG_SOURCES_FILE": str(pg["sources"])}
            with sampled_api(env, KEYS, base / "api.log") as (server, rss):
                began = time.perf_counter()
                response = httpx.post(f"{server.url}/v1/datasets", timeout=3600, headers={"X-API-Key": KEY},
                                      json={"source": "postgres", "connection": "warehouse", "name": "big",
                                            "table": "big"})
                seconds = time.perf_counter() - began
            parquet = sum(p.stat().st_size for p in (base / "store").rglob("*.parquet"))
    body = response.json()
    assert response.status_code == 201 and body["rows"] == args.rows, response.text[:500]
    print(f"PG_IMPORT rows={args.rows} seconds={seconds:.1f} rows_s={args.rows / seconds:,.0f} "
          f"rss_start_mb={rss.start / 2**20:.0f} rss_peak_mb={rss.peak / 2**20:.0f} "
          f"parquet_mb={parquet / 2**20:.0f} status={response.status_code} load1={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
