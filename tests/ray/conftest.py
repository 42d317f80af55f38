"""The Ray suite's cluster: a head, a light, a medium and two heavy worker nodes, each worker in a
memory cgroup of its tier, all inside the network namespace the suite runs in
(``scripts/test_ray.sh``). Started once per session, stopped by the fixture.

Token authentication is on (every node and this process: ``RAY_AUTH_MODE=token`` and the
cluster's 0600 token file). Worker nodes hold the Postgres password as a 0600 file
(``DAGSTER_PG_PASSWORD_FILE``), which the run worker reads on the node: no job carries it.

No shared disk: every node has its own scratch ``E2I_DATA_DIR`` (``<data_root>/<node>``) and
storage is ``E2I_STORAGE_URL=s3://...`` on a moto S3 server this session starts on the
namespace's loopback. The nodes get the endpoint in their environment and the S3 credentials as
0600 files (``AWS_ACCESS_KEY_ID_FILE``, ``AWS_SECRET_ACCESS_KEY_FILE``), never through a job.

One MLflow for all nodes: a tracking server on the namespace's loopback (``MLFLOW_TRACKING_URI``
of every worker node), which proxies artifacts into the bucket (``mlflow/``), as the compose
stack's MLflow service does; no node keeps a store of its own."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PG_PASSWORD, require
from tests.support.markers import needs
from tests.support.mlflow_server import mlflow_server
from tests.support.ray_cluster import CLUSTER_ENV, NodeSpec, RayTestCluster, in_isolated_netns
from tests.support.s3 import CREDENTIALS, S3Server, moto_server, use_s3

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


NODE_ONLY_ENV = ("E2I_DATA_DIR", "E2I_STORAGE_URL", "MLFLOW_TRACKING_URI", "DAGSTER_HOME",
                 "AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL")
"""Variables of this process a node must not inherit: each node has its own (or none; the
S3 key id comes as a file)."""


@dataclass
class NoSharedDiskCluster(RayTestCluster):
    """The test cluster with one scratch ``E2I_DATA_DIR`` per node under ``data_root``."""

    data_root: Path | None = None

    def data_dir(self, node: str) -> Path:
        assert self.data_root is not None
        return self.data_root / node

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in super().env(**extra).items() if k not in NODE_ONLY_ENV}
        env.update({k: v for k, v in extra.items() if k in NODE_ONLY_ENV})
        if self.data_root is not None:
            node = self.data_dir(extra.get("E2I_RAY_NODE_NAME", "head"))
            node.mkdir(parents=True, exist_ok=True)
            env["E2I_DATA_DIR"] = str(node)
        return env


@pytest.fixture(scope="session")
def ray_s3() -> Iterator[S3Server]:
    """The cluster's object store: moto's S3 server on this namespace's loopback, one bucket."""
    require(in_isolated_netns(), "an isolated network namespace (run tests/ray through "
            "scripts/test_ray.sh): the S3 server binds the namespace's loopback")
    with moto_server() as server:
        yield server


@pytest.fixture(scope="session")
def ray_mlflow(ray_s3: S3Server, tmp_path_factory) -> Iterator[str]:
    """The cluster's MLflow: one tracking server (SQLite in its own folder) on the namespace's
    loopback, artifacts in the bucket under ``mlflow/``; its URL."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    env = {**CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": ray_s3.endpoint}
    with mlflow_server(folder, f"s3://{ray_s3.bucket}/mlflow", env) as url:
        yield url


@pytest.fixture(scope="session")
def node_secrets(tmp_path_factory, ray_s3: S3Server, ray_mlflow: str) -> dict[str, str]:
    """Environment of the worker nodes: their secret files (never the values), the storage
    settings (the moto bucket; no credentials in it) and the shared MLflow server."""
    folder = tmp_path_factory.mktemp("node_secrets")
    folder.chmod(0o700)
    files = {f"{PG_PASSWORD_ENV}_FILE": write_secret_file(folder, "pg_password", PG_PASSWORD)}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        files[f"{name}_FILE"] = write_secret_file(folder, name.lower(), CREDENTIALS[name])
    return {**{k: str(v) for k, v in files.items()}, "E2I_STORAGE_URL": ray_s3.url,
            "E2I_S3_ENDPOINT_URL": ray_s3.endpoint, "MLFLOW_TRACKING_URI": ray_mlflow,
            "AWS_DEFAULT_REGION": CREDENTIALS["AWS_DEFAULT_REGION"]}


@pytest.fixture(scope="session")
def ray_storage(ray_s3: S3Server) -> Iterator[S3Server]:
    """This process (the tests, Ray drivers) on the cluster's bucket too, for the session."""
    with pytest.MonkeyPatch.context() as env:
        use_s3(env, ray_s3)
        yield ray_s3


@pytest.fixture(scope="session")
@needs("ray")
def ray_cluster(node_secrets, ray_storage, tmp_path_factory) -> Iterator[NoSharedDiskCluster]:
    require(in_isolated_netns(), "an isolated network namespace (run tests/ray through "
            "scripts/test_ray.sh: Ray must never bind the external interface)")
    try:
        import ray  # noqa: F401
    except ImportError:
        require(False, "Ray (pip install -e '.[ray]')")
    os.environ.update(CLUSTER_ENV)
    started = time.monotonic()
    cluster = NoSharedDiskCluster(NODES, node_env=node_secrets,
                                  data_root=tmp_path_factory.mktemp("node_data")).start()
    cluster.make_client()  # this process is a client too (launcher, ray.init)
    print(f"\nRay test cluster: head + {len(NODES)} worker nodes up in "
          f"{time.monotonic() - started:.1f}s")
    try:
        yield cluster
    finally:
        cluster.stop()
