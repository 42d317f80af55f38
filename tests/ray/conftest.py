"""The Ray suite's cluster: a head, a light, a medium and two heavy worker nodes, each worker in a
memory cgroup of its tier, all inside the network namespace the suite runs in
(``scripts/test_ray.sh``). Started once per session, stopped by the fixture."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.conftest import require
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


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayTestCluster]:
    require(in_isolated_netns(), "an isolated network namespace (run tests/ray through "
            "scripts/test_ray.sh: Ray must never bind the external interface)")
    try:
        import ray  # noqa: F401
    except ImportError:
        require(False, "Ray (pip install -e '.[ray]')")
    os.environ.update(CLUSTER_ENV)  # this process is a client too (launcher, ray.init)
    started = time.monotonic()
    cluster = RayTestCluster(NODES).start()
    print(f"\nRay test cluster: head + {len(NODES)} worker nodes up in "
          f"{time.monotonic() - started:.1f}s")
    try:
        yield cluster
    finally:
        cluster.stop()
