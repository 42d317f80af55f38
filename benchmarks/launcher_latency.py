"""Container start -> first step latency of TieredDockerRunLauncher runs (median of N).

Needs PostgreSQL on 127.0.0.1:5432 (E2I_PG_* env as in tests/conftest.py), dockerd and the
e2i:local image (docker/build_image.sh). Launches N light probe runs one after another through a
Postgres-backed instance and, per run, measures from the container's State.StartedAt to the
run's first STEP_START event (and from the launcher's launch event to it).

    python -m benchmarks.launcher_latency [--runs 10] [--executor in_process]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
import uuid
from pathlib import Path

import psycopg2
from dagster import DagsterEventType
from dagster._core.storage.dagster_run import DagsterRunStatus

import docker
from tests.launcher.harness import IN_PROCESS, LauncherHarness, probe_config

FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def _docker_time(value: str) -> float:
    """Docker's RFC 3339 nanosecond timestamp to epoch seconds."""
    head, _, frac = value.rstrip("Z").partition(".")
    stamp = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.UTC)
    return stamp.timestamp() + float(f"0.{frac or 0}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--executor", choices=["multiprocess", "in_process"], default="multiprocess",
                        help="multiprocess (the jobs' default) imports the code location twice")
    args = parser.parse_args()
    pg = {"hostname": os.environ.get("E2I_PG_HOST", "127.0.0.1"),
          "port": int(os.environ.get("E2I_PG_PORT", "5432")),
          "username": os.environ.get("E2I_PG_USER", "e2i"),
          "password": os.environ.get("E2I_PG_PASSWORD", "e2i"),
          "db_name": f"e2i_bench_{uuid.uuid4().hex[:8]}"}
    admin = psycopg2.connect(host=pg["hostname"], port=pg["port"], user=pg["username"],
                             password=pg["password"], dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{pg["db_name"]}"')
    client = docker.from_env()
    start_to_step, launch_to_step = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            harness = LauncherHarness(Path(tmp) / "home", pg)
            try:
                for i in range(args.runs):
                    run_config = probe_config("light")
                    if args.executor == "in_process":
                        run_config.update(IN_PROCESS)
                    run_id = harness.launch("probe_light_job", run_config)
                    first_step = harness.wait_for_step_start(run_id)
                    harness.wait_for(run_id, FINISHED)
                    attrs = client.containers.get(harness.container_id(run_id)).attrs
                    started = _docker_time(attrs["State"]["StartedAt"])
                    launched = next(
                        e.timestamp for e in harness.instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)
                        if "Launching run in a new container" in (e.message or "")
                    )
                    start_to_step.append(first_step - started)
                    launch_to_step.append(first_step - launched)
                    print(f"run {i + 1}: container start -> first step {start_to_step[-1]:.2f}s, "
                          f"launch -> first step {launch_to_step[-1]:.2f}s")
            finally:
                harness.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{pg["db_name"]}" WITH (FORCE)')
        admin.close()
    print(f"{args.executor} executor, median of {args.runs}: container start -> first step "
          f"{statistics.median(start_to_step):.2f}s (min {min(start_to_step):.2f}, "
          f"max {max(start_to_step):.2f}); launch -> first step "
          f"{statistics.median(launch_to_step):.2f}s")


if __name__ == "__main__":
    main()
