"""The Ray suite's cluster: a head, a light, a medium and two heavy worker nodes, each worker in a
memory cgroup of its tier, all inside the network namespace the suite runs in
(``scripts/test_ray.sh``). Started once per session, stopped by the fixture.

Token authentication is on (every node and this process: ``RAY_AUTH_MODE=token`` and the
cluster's 0600 token file). Worker nodes hold the Postgres password as a 0600 file
(``DAGSTER_PG_PASSWORD_FILE``), which the run worker reads on the node: no job carries it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PG_PASSWORD, require
from tests.support.markers import needs
from tests.support.ray_cluster import CLUSTER_ENV, NodeSpec, RayTestCluster, in_isolated_netns

RAY_PROFILES = {
    "light": {"cpus": 1, "memory": "512m", "memswap": "512m", "pids": 256, "shm": "64m"},
    "medium": {"cpus": 1, "memory": "768m", "memswap": "768m", "pids": 512, "shm": "128m"},
    "heavy": {"cpus": 2, "memory": "1280m", "memswap": "1280m", "pids": 1024, "shm": "256m"},
}
"""Tier profiles of the Ray tests; each worker node offers exactly one run of its tier."""

NODES = [
    NodeSpec("light", "light", RAY_PROFILES["light"]["cpus"], RAY_PROFILES["light"]["memory"]),
    NodeSpec("medium", "medium", RAY_PROFILES["medium"]["cpus"], RAY_PROFILES["medium"]["memory"]),
    *(NodeSpec(f"heavy-{i}", "heavy", RAY_PROFILES["heavy"]["cpus"],
               RAY_PROFILES["heavy"]["memory"], fanout=1) for i in (1, 2)),
]


PG_PASSWORD_ENV = "DAGSTER_PG_PASSWORD"


def write_secret_file(folder: Path, name: str, value: str) -> Path:
    """``value`` in a 0600 file ``folder/name`` (a Docker secret's stand-in)."""
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return path


@pytest.fixture(scope="session")
def node_secrets(tmp_path_factory) -> dict[str, str]:
    """Environment of the worker nodes that names their secret files (never the values)."""
    folder = tmp_path_factory.mktemp("node_secrets")
    folder.chmod(0o700)
    return {f"{PG_PASSWORD_ENV}_FILE": str(write_secret_file(folder, "pg_password", PG_PASSWORD))}


@pytest.fixture(scope="session")
@needs("ray")
def ray_cluster(node_secrets) -> Iterator[RayTestCluster]:
    require(in_isolated_netns(), "an isolated network namespace (run tests/ray through "
            "scripts/test_ray.sh: Ray must never bind the external interface)")
    try:
        import ray  # noqa: F401
    except ImportError:
        require(False, "Ray (pip install -e '.[ray]')")
    os.environ.update(CLUSTER_ENV)
    started = time.monotonic()
    cluster = RayTestCluster(NODES, node_env=node_secrets).start()
    cluster.make_client()  # this process is a client too (launcher, ray.init)
    print(f"\nRay test cluster: head + {len(NODES)} worker nodes up in "
          f"{time.monotonic() - started:.1f}s")
    try:
        yield cluster
    finally:
        cluster.stop()
