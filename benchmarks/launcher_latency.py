"""Launch -> first step latency of the tiered launchers, Docker and Ray side by side (median of N).

Needs PostgreSQL (E2I_PG_* env as in tests/conftest.py), dockerd and the e2i:local image
(docker/build_image.sh) for Docker, and the ``ray`` extra for Ray. Per engine it launches N light
probe runs one after another through a Postgres-backed instance with the same tier profiles and
the same code location, and measures from the launcher's tier event (the first thing
``launch_run`` does) to the run's first STEP_START. The Docker side also reports container start
-> first step. The Ray side runs a head and one light node in a network namespace of its own
(scripts/in_netns.sh; Ray must not bind the external interface), in a child process.

    python -m benchmarks.launcher_latency [--runs 10] [--executor in_process] [--engine both]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster import DagsterEventType
from dagster._core.storage.dagster_run import DagsterRunStatus

from tests.conftest import fresh_database
from tests.launcher.harness import IN_PROCESS, TEST_PROFILES, LauncherHarness, probe_config

FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
REPO = Path(__file__).resolve().parents[1]


def _docker_time(value: str) -> float:
    """Docker's RFC 3339 nanosecond timestamp to epoch seconds."""
    head, _, frac = value.rstrip("Z").partition(".")
    stamp = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.UTC)
    return stamp.timestamp() + float(f"0.{frac or 0}")


def _launch_time(harness: LauncherHarness, run_id: str) -> float:
    """Timestamp of the launcher's ``e2i tier ...`` engine event (start of launch_run)."""
    for entry in harness.instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        message = entry.dagster_event.message if entry.dagster_event else entry.message
        if "] e2i tier " in (message or ""):  # "[LauncherClass] e2i tier light (from ..."
            return entry.timestamp
    raise RuntimeError(f"run {run_id} has no launcher tier event")


def measure(harness: LauncherHarness, runs: int, executor: str,
            on_run=None) -> list[dict[str, float]]:
    """Launch ``runs`` light probe runs one after another; per run, launch -> first step."""
    rows = []
    for i in range(runs):
        run_config = probe_config("light")
        if executor == "in_process":
            run_config.update(IN_PROCESS)
        run_id = harness.launch("probe_light_job", run_config)
        first_step = harness.wait_for_step_start(run_id)
        run = harness.wait_for(run_id, FINISHED)
        if run.status != DagsterRunStatus.SUCCESS:
            raise RuntimeError(f"run {run_id} ended {run.status}:\n{harness.log_text(run_id)}")
        row = {"launch_to_step": first_step - _launch_time(harness, run_id)}
        if on_run is not None:
            row.update(on_run(run_id, first_step))
        rows.append(row)
        print(f"  run {i + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in row.items()), flush=True)
    return rows


def docker_side(runs: int, executor: str) -> list[dict[str, float]]:
    import docker

    client = docker.from_env()
    with fresh_database() as db, tempfile.TemporaryDirectory() as tmp:
        harness = LauncherHarness(Path(tmp) / "home", db)
        try:
            def container_start(run_id: str, first_step: float) -> dict[str, float]:
                attrs = client.containers.get(harness.container_id(run_id)).attrs
                return {"container_start_to_step":
                        first_step - _docker_time(attrs["State"]["StartedAt"])}

            return measure(harness, runs, executor, container_start)
        finally:
            harness.close()


@contextmanager
def ray_light_cluster() -> Iterator[Any]:
    from tests.support.ray_cluster import CLUSTER_ENV, NodeSpec, RayTestCluster

    os.environ.update(CLUSTER_ENV)
    light = TEST_PROFILES["light"]
    with RayTestCluster([NodeSpec("light", "light", light["cpus"], light["memory"])]) as cluster:
        yield cluster


def ray_side(runs: int, executor: str) -> list[dict[str, float]]:
    with ray_light_cluster() as cluster, fresh_database() as db, \
            tempfile.TemporaryDirectory() as tmp:
        sections = {"run_launcher": {
            "module": "e2i_pipelines.launcher.tiered_ray_run_launcher",
            "class": "TieredRayRunLauncher",
            "config": {"ray": {"address": cluster.dashboard_url}, "tiers": TEST_PROFILES},
        }}
        harness = LauncherHarness(Path(tmp) / "home", db, sections=sections)
        try:
            return measure(harness, runs, executor)
        finally:
            harness.close()


def ray_side_in_namespace(runs: int, executor: str) -> list[dict[str, float]]:
    """The Ray side in a child process inside a fresh network namespace."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(["bash", str(REPO / "scripts/in_netns.sh"), sys.executable, "-m",
                        "benchmarks.launcher_latency", "--engine", "ray", "--runs", str(runs),
                        "--executor", executor, "--json-out", out.name], cwd=REPO, check=True)
        return json.loads(Path(out.name).read_text())


def summary(rows: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in rows]
    return (f"{statistics.median(values):.2f}s (min {min(values):.2f}, max {max(values):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--executor", choices=["multiprocess", "in_process"], default="in_process",
                        help="multiprocess (the jobs' default) imports the code location twice")
    parser.add_argument("--engine", choices=["both", "docker", "ray"], default="both")
    parser.add_argument("--json-out", help="write the per-run rows here (used for --engine ray)")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {}
    if args.engine in ("both", "docker"):
        print(f"Docker launcher ({args.executor} executor):", flush=True)
        results["docker"] = docker_side(args.runs, args.executor)
    if args.engine == "ray":
        print(f"Ray launcher ({args.executor} executor), in a network namespace:", flush=True)
        results["ray"] = ray_side(args.runs, args.executor)
    elif args.engine == "both":
        results["ray"] = ray_side_in_namespace(args.runs, args.executor)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results.get("ray") or results.get("docker")))
        return
    print(f"\nlaunch -> first step, median of {args.runs} ({args.executor} executor):")
    for engine, rows in results.items():
        extra = (f"; container start -> first step {summary(rows, 'container_start_to_step')}"
                 if engine == "docker" else "")
        print(f"  {engine:6s} {summary(rows, 'launch_to_step')}{extra}")
    if {"docker", "ray"} <= set(results):
        ratio = (statistics.median(r["launch_to_step"] for r in results["ray"])
                 / statistics.median(r["launch_to_step"] for r in results["docker"]))
        print(f"  ray / docker = {ratio:.2f}x")


if __name__ == "__main__":
    main()
