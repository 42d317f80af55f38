"""Latency of the e2i API under concurrent clients: GET /health and POST /v1/runs (loopback only).

By default it starts everything itself on 127.0.0.1: a temporary Dagster instance (SQLite) with
``dagster dev`` whose run queue admits no runs (``max_concurrent_runs: 0``), so every POST goes
through the full path (API validation -> GraphQL launchRun -> run created and queued in storage)
without hundreds of probe processes competing for the CPU; then the API (uvicorn, one worker).
The queued runs are discarded with the temporary instance.

    python benchmarks/load_api.py --clients 50 --health-requests 5000 --post-requests 200

``--api-url`` and ``--api-key`` target an API that is already running (still loopback only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.dagster_processes import dagster_dev, free_port, write_instance_yaml  # noqa: E402

BENCH_KEY = "bench-key-0123456789abcdef"


@dataclass
class Result:
    name: str
    latencies_ms: list[float]
    errors: dict[str, int]
    wall_s: float
    first_error: str | None = None

    def summary(self) -> dict:
        ordered = sorted(self.latencies_ms)

        def pct(p: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2) if ordered else float("nan")

        return {"endpoint": self.name, "ok": len(ordered), "errors": self.errors, "p50_ms": pct(50),
                "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": pct(100),
                "mean_ms": round(statistics.fmean(ordered), 2) if ordered else None,
                "throughput_rps": round(len(ordered) / self.wall_s, 1), "first_error": self.first_error}


async def load(client: httpx.AsyncClient, name: str, method: str, path: str, total: int, clients: int,
               expected: int, json_body: dict | None = None, headers: dict | None = None) -> Result:
    """``total`` requests shared by ``clients`` concurrent workers; latency per successful request."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    first_error: list[str] = []
    remaining = iter(range(total))

    async def worker() -> None:
        for _ in remaining:
            started = time.perf_counter()
            try:
                response = await client.request(method, path, json=json_body, headers=headers)
                outcome, detail = response.status_code, response.text[:300]
            except httpx.HTTPError as exc:
                outcome, detail = type(exc).__name__, str(exc)
            elapsed = (time.perf_counter() - started) * 1000
            if outcome == expected:
                latencies.append(elapsed)
            else:
                errors[str(outcome)] = errors.get(str(outcome), 0) + 1
                first_error[:] = first_error or [detail]

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return Result(name, latencies, errors, time.perf_counter() - started, first_error[0] if first_error else None)


async def run_load(api_url: str, key: str, args: argparse.Namespace) -> list[dict]:
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=api_url, limits=limits, timeout=120) as client:
        await load(client, "warmup", "GET", "/health", 200, 10, 200)
        health = await load(client, "GET /health", "GET", "/health", args.health_requests, args.clients, 200)
        body = {"job": args.job, "params": {}, "tags": {"bench": "load_api"}}
        post = await load(client, "POST /v1/runs", "POST", "/v1/runs", args.post_requests, args.clients, 202,
                          json_body=body, headers={"X-API-Key": key})
    return [health.summary(), post.summary()]


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not up after {timeout}s")


def server_side(log: Path) -> list[dict]:
    """p50/p99 of the API's own request durations (its JSON access log), per benchmarked endpoint."""
    durations: dict[str, list[float]] = {"GET /health": [], "POST /v1/runs": []}
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        name = f"{entry.get('method')} {entry.get('path')}"
        if entry.get("msg") == "request" and name in durations:
            durations[name].append(entry["duration_ms"])
    rows = []
    for name, values in durations.items():
        values.sort()
        if values:
            rows.append({"endpoint": f"{name} (server)", "n": len(values),
                         "p50_ms": values[len(values) // 2], "p99_ms": values[min(len(values) - 1, int(0.99 * len(values)))]})
    return rows


def start_api(dagster_port: int, api_port: int, log: Path, dagster_timeout: float) -> subprocess.Popen:
    env = {**os.environ, "E2I_API_DAGSTER_PORT": str(dagster_port), "E2I_API_BIND_PORT": str(api_port),
           "E2I_API_DAGSTER_TIMEOUT_SECONDS": str(dagster_timeout),
           "E2I_API_BIND_HOST": "127.0.0.1", "E2I_API_LOG_LEVEL": "INFO",
           "E2I_API_API_KEYS": json.dumps([{"name": "bench", "key": BENCH_KEY, "scopes": ["runs:read", "runs:write"]}])}
    proc = subprocess.Popen([sys.executable, "-m", "e2i_api"], env=env, cwd=REPO_ROOT,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    wait_http(f"http://127.0.0.1:{api_port}/health")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--health-requests", type=int, default=5000)
    parser.add_argument("--post-requests", type=int, default=200)
    parser.add_argument("--dagster-timeout", type=float, default=300,
                        help="API's GraphQL timeout: launches queue behind each other in the webserver")
    parser.add_argument("--job", default="probe_light_job")
    parser.add_argument("--api-url", help="use this running API instead of starting one (loopback only)")
    parser.add_argument("--api-key", default=os.environ.get("E2I_BENCH_API_KEY", ""))
    args = parser.parse_args()
    if args.health_requests > 20000 or args.post_requests > 2000:
        parser.error("keep the load bounded: at most 20000 health and 2000 POST requests")

    server_rows: list[dict] = []
    if args.api_url:
        if urlparse(args.api_url).hostname not in ("127.0.0.1", "localhost", "::1"):
            parser.error("--api-url must be a loopback address")
        results = asyncio.run(run_load(args.api_url, args.api_key, args))
    else:
        with tempfile.TemporaryDirectory(prefix="e2i_load_") as tmp:
            home = Path(tmp)
            write_instance_yaml(home, {"concurrency": {
                "pools": {"granularity": "run", "default_limit": 1000},
                "runs": {"max_concurrent_runs": 0},  # queue only: measure the launch path, run nothing
            }})
            dagster_port, api_port = free_port(), free_port()
            dagster = dagster_dev(home, dagster_port)
            api = None
            try:
                api = start_api(dagster_port, api_port, home / "api.log", args.dagster_timeout)
                results = asyncio.run(run_load(f"http://127.0.0.1:{api_port}", BENCH_KEY, args))
            finally:
                if api is not None:
                    os.killpg(api.pid, signal.SIGINT)
                    api.wait(20)
                dagster.stop()
            server_rows = server_side(home / "api.log")
    print(f"clients={args.clients} job={args.job}")
    print(f"{'endpoint':16} {'ok':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'req/s':>7}  errors")
    for row in results:
        print(f"{row['endpoint']:16} {row['ok']:>6} {row['p50_ms']:>8} {row['p90_ms']:>8} {row['p99_ms']:>8} "
              f"{row['max_ms']:>8} {row['throughput_rps']:>7}  {row['errors'] or '-'}")
    for row in server_rows:
        print(f"{row['endpoint']:26} n={row['n']:<6} p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms")
    print(f"load average during run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(json.dumps(results + server_rows))


if __name__ == "__main__":
    main()
