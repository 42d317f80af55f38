"""Load on the e2i API: status polls, results reads and run submissions from concurrent clients
(loopback only), with the API's own latency beside Dagster's ``launchRun``.

By default it starts everything itself on 127.0.0.1: a fresh PostgreSQL database (the test
server, ``E2I_PG_*``) as Dagster instance storage, ``dagster dev`` on it, and the API (uvicorn,
``--workers`` processes, the Idempotency-Key lock in the same Postgres). A few probe runs are run
to completion first, so results reads return real events. Runs submitted during the load carry
the tag ``bench=queue-only``, which the run queue admits 0 of: every POST goes through the
full path (validation -> key lock -> GraphQL launchRun -> run stored and queued) without hundreds
of run processes competing for the CPU. Phases, each with ``--clients`` concurrent clients:

The clients reach the API through Caddy with TLS (docker/caddy/Caddyfile, its internal CA), as
deployed; ``--direct`` talks to uvicorn instead.

1. mixed, ``--duration`` s: 45 % GET /v1/runs/{id}, 35 % GET /v1/runs/{id}/results, 20 % POST
   /v1/runs with a new Idempotency-Key (1 in 5 of them a retry of an earlier key: a replay);
2. POST /v1/runs only, ``--launch-duration`` s;
3. Dagster's own GraphQL ``launchRun`` against the webserver, ``--launch-duration`` s.

A ``--warmup`` of the mixed load comes first and is not counted (each worker's connection pools
fill, finished results get cached).

Server-side latencies come from the API's JSON access log (its ``duration_ms``). The Dagster
processes run at ``--dagster-nice`` (default 10): on a saturated host the API's reads come first.

    flock /tmp/e2i-heavy.lock python benchmarks/load_api.py --clients 50 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import ssl
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from e2i_api.dagster_client import DagsterClient  # noqa: E402
from tests.api.api_processes import ApiProcess, api_env  # noqa: E402
from tests.conftest import fresh_database  # noqa: E402
from tests.support.caddy import start_caddy  # noqa: E402
from tests.support.dagster_processes import (  # noqa: E402
    dagster_dev,
    free_port,
    postgres_storage,
    write_instance_yaml,
)

BENCH_KEY = "4JyUxVtSOVB9lxC6wGjoay0car6Y7LaeUnnxFlmPrjE"  # test-only; weak keys are refused
QUEUE_ONLY = {"client/bench": "queue-only"}  # API requests may only carry client/ tags
JOB = "probe_light_job"
STATUS, RESULTS, POST = "GET /v1/runs/{id}", "GET /v1/runs/{id}/results", "POST /v1/runs"
MIX = ((STATUS, 0.45), (RESULTS, 0.35), (POST, 0.20))
RUN_PATH = re.compile(r"/v1/runs/[0-9a-f-]{36}")


@dataclass
class Tally:
    """Latencies (ms) of successful requests and error counts, per endpoint."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    first_error: dict[str, str] = field(default_factory=dict)

    def record(self, name: str, started: float, outcome: str | int, ok: bool, detail: str = "") -> None:
        if ok:
            self.latencies[name].append((time.perf_counter() - started) * 1000)
            return
        self.errors[name][str(outcome)] = self.errors[name].get(str(outcome), 0) + 1
        self.first_error.setdefault(name, detail[:300])


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 1) if ordered else float("nan")


def rows(phase: str, tally: Tally, seconds: float, server: dict[str, list[float]]) -> list[dict]:
    out = []
    for name in sorted(set(tally.latencies) | set(tally.errors)):
        client = tally.latencies.get(name, [])
        srv = server.get(name, [])
        out.append({"phase": phase, "endpoint": name, "ok": len(client),
                    "errors": sum(tally.errors.get(name, {}).values()), "error_kinds": tally.errors.get(name, {}),
                    "rps": round(len(client) / seconds, 1), "p50_ms": pct(client, 50), "p99_ms": pct(client, 99),
                    "server_p50_ms": pct(srv, 50), "server_p99_ms": pct(srv, 99),
                    "first_error": tally.first_error.get(name)})
    return out


async def api_call(http: httpx.AsyncClient, tally: Tally, name: str, method: str, path: str, phase: str,
                   **kwargs) -> httpx.Response | None:
    started = time.perf_counter()
    headers = {"X-API-Key": BENCH_KEY, "X-Request-ID": f"{phase}-{uuid.uuid4().hex[:12]}",
               **kwargs.pop("headers", {})}
    try:
        response = await http.request(method, path, headers=headers, **kwargs)
    except httpx.HTTPError as exc:
        tally.record(name, started, type(exc).__name__, False, str(exc))
        return None
    expected = 202 if method == "POST" else 200
    tally.record(name, started, response.status_code, response.status_code == expected, response.text)
    return response


def post_body() -> dict:
    return {"job": JOB, "params": {"probe_light": {"allocate_mb": 1}}, "tags": QUEUE_ONLY}


async def submit(http: httpx.AsyncClient, tally: Tally, phase: str, keys: dict[str, str], run_ids: list[str]) -> None:
    """A new run, or (1 in 5) a retry of an earlier key, which must replay that key's run."""
    key = random.choice(list(keys)) if keys and random.random() < 0.2 else uuid.uuid4().hex
    response = await api_call(http, tally, POST, "POST", "/v1/runs", phase, json=post_body(),
                              headers={"Idempotency-Key": key})
    if response is not None and response.status_code == 202:
        run_id, replayed = response.json()["run_id"], response.json()["replayed"]
        if key in keys and (not replayed or run_id != keys[key]):
            tally.record(POST, time.perf_counter(), "not-replayed", False,
                         f"key {key}: first run {keys[key]}, retry got {run_id} (replayed={replayed})")
        keys.setdefault(key, run_id)
        run_ids.append(run_id)


async def mixed(http: httpx.AsyncClient, seconds: float, clients: int, finished: list[str],
                phase: str = "mix") -> Tally:
    tally, keys, run_ids = Tally(), {}, list(finished)
    names, weights = zip(*MIX, strict=True)
    deadline = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < deadline:
            name = random.choices(names, weights)[0]
            if name == STATUS:
                await api_call(http, tally, STATUS, "GET", f"/v1/runs/{random.choice(run_ids)}", phase)
            elif name == RESULTS:
                await api_call(http, tally, RESULTS, "GET", f"/v1/runs/{random.choice(finished)}/results", phase)
            else:
                await submit(http, tally, phase, keys, run_ids)

    await asyncio.gather(*(client() for _ in range(clients)))
    return tally


async def posts_only(http: httpx.AsyncClient, seconds: float, clients: int) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < deadline:
            await api_call(http, tally, POST, "POST", "/v1/runs", "post",
                           json=post_body(), headers={"Idempotency-Key": uuid.uuid4().hex})

    await asyncio.gather(*(client() for _ in range(clients)))
    return tally


async def dagster_launches(dagster_url: str, seconds: float, clients: int) -> Tally:
    """Dagster's own launchRun (the GraphQL call the API makes), same config and concurrency."""
    tally = Tally()
    dagster = DagsterClient(dagster_url, "e2i", "__repository__", timeout=300)
    deadline = time.monotonic() + seconds
    config = {"ops": {"probe_light": {"config": {"allocate_mb": 1}}}}

    async def client() -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                await dagster.launch_run(JOB, config, {**QUEUE_ONLY, "e2i/idempotency-key": uuid.uuid4().hex})
                tally.record("GraphQL launchRun", started, 200, True)
            except Exception as exc:  # noqa: BLE001 - counted as an error
                tally.record("GraphQL launchRun", started, type(exc).__name__, False, str(exc))

    try:
        await asyncio.gather(*(client() for _ in range(clients)))
    finally:
        await dagster.aclose()
    return tally


async def seed(http: httpx.AsyncClient, count: int, timeout: float = 600) -> list[str]:
    """``count`` probe runs run to completion (outside the queue-only tag): real results to read."""
    ids = []
    for i in range(count):
        response = await http.post("/v1/runs", headers={"X-API-Key": BENCH_KEY},
                                   json={"job": JOB, "params": {"probe_light": {"allocate_mb": 1 + i}}})
        response.raise_for_status()
        ids.append(response.json()["run_id"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = [(await http.get(f"/v1/runs/{i}", headers={"X-API-Key": BENCH_KEY})).json()["status"]
                    for i in ids]
        if all(s == "SUCCESS" for s in statuses):
            return ids
        if any(s in ("FAILURE", "CANCELED") for s in statuses):
            raise RuntimeError(f"seed runs did not succeed: {dict(zip(ids, statuses, strict=True))}")
        await asyncio.sleep(2)
    raise TimeoutError(f"seed runs not finished in {timeout}s")


def lower_priority(pid: int, niceness: int) -> int:
    """Nice ``pid``, its descendants and every thread of them to ``niceness`` (Linux niceness is
    per thread; threads and processes started later inherit their parent's); the count reniced.

    ``pid`` leads a session of its own, and with ``sched_autogroup_enabled`` the kernel weighs a
    session's threads against other sessions by the session's autogroup nice, not theirs: without
    it the Dagster processes together got as much CPU as the API and the clients together
    (measured: 76 CPU-s at nice 10 vs 69 at nice 0 in one run). So the autogroup is niced too."""
    autogroup = Path(f"/proc/{pid}/autogroup")
    if autogroup.exists():
        try:
            autogroup.write_text(str(niceness))
        except OSError as exc:
            print(f"warning: could not nice the autogroup of {pid}: {exc}", file=sys.stderr)
    done = 0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        for thread in proc.threads():
            try:
                os.setpriority(os.PRIO_PROCESS, thread.id, niceness)
                done += 1
            except (ProcessLookupError, PermissionError):
                pass
    return done


def server_side(log: Path) -> dict[str, dict[str, list[float]]]:
    """Per phase (request-id prefix) and endpoint: the API's own request durations (ms)."""
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") != "request" or "-" not in str(entry.get("request_id")):
            continue
        path = RUN_PATH.sub("/v1/runs/{id}", entry["path"])
        out[entry["request_id"].split("-")[0]][f"{entry['method']} {path}"].append(entry["duration_ms"])
    return out


async def bench(api_url: str, dagster_url: str, args: argparse.Namespace,
                verify: ssl.SSLContext | bool = True) -> list[dict]:
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=api_url, limits=limits, timeout=120, verify=verify) as http:
        print(f"seeding {args.seed_runs} finished runs ...", flush=True)
        finished = await seed(http, args.seed_runs)
        print(f"warm-up (not counted): {args.clients} clients for {args.warmup}s ...", flush=True)
        warm = await mixed(http, args.warmup, args.clients, finished, phase="warm")
        if warm.errors:
            raise RuntimeError(f"errors during warm-up: {dict(warm.errors)} {warm.first_error}")
        print(f"mixed load: {args.clients} clients for {args.duration}s ...", flush=True)
        started = time.monotonic()
        mix = await mixed(http, args.duration, args.clients, finished)
        mix_s = time.monotonic() - started
        print(f"POST only: {args.clients} clients for {args.launch_duration}s ...", flush=True)
        started = time.monotonic()
        post = await posts_only(http, args.launch_duration, args.clients)
        post_s = time.monotonic() - started
    print(f"Dagster launchRun: {args.clients} clients for {args.launch_duration}s ...", flush=True)
    started = time.monotonic()
    launch = await dagster_launches(dagster_url, args.launch_duration, args.clients)
    launch_s = time.monotonic() - started
    return [("mix", mix, mix_s), ("post", post, post_s), ("launchRun", launch, launch_s)]


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    print(f"\nclients={args.clients} workers={args.workers} dagster nice {args.dagster_nice}, warm-up {args.warmup}s, mixed {args.duration}s, "
          f"launch phases {args.launch_duration}s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| phase | endpoint | ok | errors | req/s | client p50 / p99 ms | server p50 / p99 ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['phase']} | {r['endpoint']} | {r['ok']} | {r['errors']} | {r['rps']} | "
              f"{r['p50_ms']} / {r['p99_ms']} | {r['server_p50_ms']} / {r['server_p99_ms']} |")
    for r in results:
        if r["first_error"]:
            print(f"first error on {r['phase']} {r['endpoint']}: {r['error_kinds']} {r['first_error']}")
    print(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60, help="seconds of mixed load")
    parser.add_argument("--launch-duration", type=float, default=30,
                        help="seconds of POST-only load and of direct launchRun load")
    parser.add_argument("--workers", type=int, default=2, help="API (uvicorn) worker processes")
    parser.add_argument("--seed-runs", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=10,
                        help="seconds of mixed load first, not counted (connection pools, caches)")
    parser.add_argument("--dagster-nice", type=int, default=10,
                        help="niceness of the Dagster processes (webserver, daemon, code server), so the API "
                             "has CPU priority over launches; 0: none")
    parser.add_argument("--keep-log", type=Path, help="copy the API's JSON log here")
    parser.add_argument("--direct", action="store_true",
                        help="clients talk to uvicorn directly instead of through Caddy (TLS, as deployed)")
    args = parser.parse_args()
    if args.clients > 200 or args.duration > 600 or args.launch_duration > 600:
        parser.error("keep the load bounded: at most 200 clients and 600 s per phase")

    with tempfile.TemporaryDirectory(prefix="e2i_load_") as tmp, fresh_database() as db:
        home = Path(tmp)
        write_instance_yaml(home, {"storage": postgres_storage(db), "concurrency": {
            "pools": {"granularity": "run", "default_limit": 1000},
            "runs": {"tag_concurrency_limits": [{"key": "client/bench", "value": "queue-only", "limit": 0}]},
        }})
        dagster_port = free_port()
        dagster = dagster_dev(home, dagster_port)
        if args.dagster_nice:
            lower_priority(dagster.proc.pid, args.dagster_nice)
        keys = [{"name": "bench", "key": BENCH_KEY, "scopes": ["runs:read", "runs:write"]}]
        env = api_env(dagster_port, keys, db["url"], workers=args.workers, E2I_API_DAGSTER_TIMEOUT_SECONDS="300")
        try:
            with ApiProcess(free_port(), env, home / "api.log") as api:
                dagster_url = f"http://127.0.0.1:{dagster_port}"
                if args.direct:
                    phases = asyncio.run(bench(api.url, dagster_url, args))
                else:  # as deployed: Caddy (TLS, docker/caddy/Caddyfile) in front of the API
                    upstream = api.url.removeprefix("http://")
                    caddy = start_caddy(home, api=upstream, webserver=f"127.0.0.1:{dagster_port}",
                                        viewer=f"127.0.0.1:{dagster_port}")
                    try:
                        print(f"through Caddy at {caddy.url}", flush=True)
                        phases = asyncio.run(bench(caddy.url, dagster_url, args, caddy.ssl_context()))
                    finally:
                        caddy.stop()
        finally:
            dagster.stop()
        server = server_side(home / "api.log")
        if args.keep_log:
            shutil.copy(home / "api.log", args.keep_log)
        results = [row for name, tally, seconds in phases
                   for row in rows(name, tally, seconds, server.get(name.lower(), {}))]
    print_table(results, args)


if __name__ == "__main__":
    main()
