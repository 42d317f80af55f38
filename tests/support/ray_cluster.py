"""A real multi-node Ray cluster on this machine, for tests and benchmarks.

Runs only inside a network namespace of its own (``scripts/in_netns.sh``): outside one, Ray binds
the machine's external interface even when told 127.0.0.1. A head (no CPUs: it runs no work)
and one ``ray start`` per worker node; each worker node lives in a memory cgroup of its tier's
size plus the Ray node's own overhead, so a run that exceeds its tier is really OOM-killed, as on
a VM of that size. Worker nodes offer their tier resource (``e2i-heavy: 1``) and heavy nodes the
fan-out resource. The head lives in a cgroup of its own without a limit, so ``stop`` ends every
Ray process of the cluster by killing its cgroups' processes, then removes the cgroups.

Token authentication is on, as in production: ``start`` writes a fresh token to a 0600 file
(``token_path``, in a 0700 folder) and every node starts with ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN_PATH`` naming it; the process that starts the cluster becomes a client too
(``RAY_AUTH_TOKEN_PATH`` set in its environment when unset). Worker nodes also get ``node_env``
(e.g. ``DAGSTER_PG_PASSWORD_FILE``: secrets a run worker reads on its node).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from e2i_pipelines.launcher import ray_auth
from e2i_pipelines.launcher.job_env import is_secret_name
from e2i_pipelines.tiers import RAY_FANOUT_RESOURCE, parse_bytes, ray_resource
from tests.support.dagster_processes import free_port
from tests.support.memory_cgroups import cap_memory, child_memory_cgroup

RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]
NODE_OVERHEAD = "640m"
"""Memory of a Ray worker node's own processes (raylet, agents, job supervisor), measured ~450 MB
here; a node's cgroup is its tier's memory plus this."""


CLUSTER_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
               "RAY_task_oom_retries": "1"}
"""Environment of every process of the test cluster and its clients: no usage stats, token
authentication on (the token file comes with :meth:`RayTestCluster.env`), and Ray's unlimited
OOM retries bounded."""

LEAN_NODE = ["--include-log-monitor=false"]
"""No log monitor on any node: it only streams workers' prints to drivers (job logs do not need
it), and its start costs ~4 s of CPU a node, on 2 cores a good part of the cluster's start."""


def in_isolated_netns() -> bool:
    """True when the only network interface is loopback (a namespace the test made)."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":")[0].strip() for line in lines) == ["lo"]


@dataclass(frozen=True)
class NodeSpec:
    """One worker node: its name, tier, CPUs, tier memory and fan-out slots."""

    name: str
    tier: str
    cpus: float
    memory: str
    fanout: int = 0

    def resources(self) -> dict[str, float]:
        res = {ray_resource(self.tier): 1.0}
        if self.fanout:
            res[RAY_FANOUT_RESOURCE] = float(self.fanout)
        return res


@dataclass
class RayTestCluster:
    """Head + worker nodes started with ``ray start``; use as a context manager."""

    nodes: list[NodeSpec]
    overhead: str = NODE_OVERHEAD
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    gcs_port: int = 0
    dashboard_port: int = 0
    cgroups: list[Path] = field(default_factory=list)
    node_env: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """GCS address for ``ray.init(address=...)`` / ``ray start --address``."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """Job submission / state API address (the launcher's ``ray.address``)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def temp_dir(self) -> str:
        return f"/tmp/e2i-ray-{self.tag}"

    @property
    def secrets_dir(self) -> Path:
        return Path(f"/tmp/e2i-ray-{self.tag}-secrets")

    @property
    def token_path(self) -> Path:
        """The cluster's auth token file (0600), written by :meth:`start`."""
        return self.secrets_dir / "auth_token"

    def token(self) -> str:
        return self.token_path.read_text().strip()

    def env(self, **extra: str) -> dict[str, str]:
        """A node's environment: this process's without its secrets (a node holds secrets only
        as files: ``node_env``), the cluster's settings and token file, and ``extra``."""
        own = {k: v for k, v in os.environ.items() if not is_secret_name(k)}
        return {**own, **CLUSTER_ENV, ray_auth.TOKEN_PATH_ENV: str(self.token_path),
                "RAY_DISABLE_IMPORT_WARNING": "1", **extra}

    def _write_token(self) -> None:
        """A fresh 256-bit token in a 0600 file of a 0700 folder (what ``ray get-auth-token
        --generate`` writes, at a path of our own instead of ~/.ray/auth_token)."""
        self.secrets_dir.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        os.environ.setdefault(ray_auth.TOKEN_PATH_ENV, str(self.token_path))

    def _ray(self, args: list[str], env: dict[str, str],
             cgroup: Path | None = None) -> subprocess.Popen:
        """Start ``ray start ...``; inside ``cgroup`` when given (the node's processes inherit it)."""
        preexec = None
        if cgroup is not None:
            def preexec() -> None:
                (cgroup / "cgroup.procs").write_text(str(os.getpid()))
        return subprocess.Popen([*RAY_CLI, *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, preexec_fn=preexec)

    @staticmethod
    def _finish(proc: subprocess.Popen, what: str) -> None:
        output, _ = proc.communicate(timeout=180)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start ({what}) failed:\n{output[-3000:]}")

    def _cgroup(self, name: str, spec: NodeSpec | None = None) -> Path:
        """A memory cgroup (v1 or v2) below this process's own, of the node's size for a worker
        ``spec``, without a limit for the head."""
        path, version = child_memory_cgroup(self._cgroup_name(name))
        self.cgroups.append(path)
        if spec is not None:
            cap_memory(path, version, parse_bytes(spec.memory) + parse_bytes(self.overhead))
        return path

    def _cgroup_name(self, name: str) -> str:
        return f"e2i-ray-{self.tag}-{name}"

    def _cgroup_of(self, name: str) -> Path:
        return next(p for p in self.cgroups if p.name == self._cgroup_name(name))

    def _start_worker(self, spec: NodeSpec) -> subprocess.Popen:
        """``ray start`` of one worker node in its own memory cgroup (not waited for)."""
        return self._ray(
            ["start", f"--address={self.address}", "--node-ip-address=127.0.0.1",
             f"--num-cpus={spec.cpus:g}", f"--memory={parse_bytes(spec.memory)}",
             f"--resources={json.dumps(spec.resources())}", f"--node-name={spec.name}",
             f"--labels=e2i-tier={spec.tier}", f"--dashboard-agent-listen-port={free_port()}",
             f"--metrics-export-port={free_port()}", "--disable-usage-stats", *LEAN_NODE],
            self.env(E2I_RAY_NODE_NAME=spec.name, **self.node_env),
            cgroup=self._cgroup(spec.name, spec))

    def start(self, timeout: float = 120) -> RayTestCluster:
        if not in_isolated_netns():
            raise RuntimeError("a Ray test cluster must run inside its own network namespace "
                               "(scripts/in_netns.sh): outside one Ray binds the external interface")
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self._write_token()
        head = self._ray(["start", "--head", "--num-cpus=0", "--node-ip-address=127.0.0.1",
                          f"--port={self.gcs_port}", "--dashboard-host=127.0.0.1",
                          f"--dashboard-port={self.dashboard_port}", "--include-dashboard=true",
                          "--disable-usage-stats", f"--temp-dir={self.temp_dir}",
                          "--node-name=head", *LEAN_NODE], self.env(), cgroup=self._cgroup("head"))
        self._finish(head, "head")
        self._start_workers()
        self.wait_nodes(len(self.nodes) + 1, timeout)
        return self

    def _start_workers(self) -> None:
        """Worker nodes two at a time: a node's start is ~12 s of one core (its agents' imports),
        and Ray gives a raylet 30 s to register, which more side by side can exceed on 2 cores. A
        node whose start failed beside another has its processes killed and starts again alone."""
        retry: list[NodeSpec] = []
        for pair in (self.nodes[i:i + 2] for i in range(0, len(self.nodes), 2)):
            started = [(spec, self._start_worker(spec)) for spec in pair]
            for spec, proc in started:
                try:
                    self._finish(proc, spec.name)
                except RuntimeError:
                    if len(started) == 1:
                        raise
                    self._kill_cgroup(self._cgroup_of(spec.name))
                    retry.append(spec)
        for spec in retry:
            self._finish(self._start_worker(spec), spec.name)

    def wait_nodes(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        alive: list = []
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                alive = [n for n in ray_auth.list_nodes(self.dashboard_url, str(self.token_path))
                         if str(n.state) == "ALIVE"]
                if len(alive) >= count:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"{len(alive)} of {count} Ray nodes alive after {timeout}s")

    def oom_kills(self, name: str) -> int:
        """OOM kills so far in node ``name``'s cgroup."""
        from e2i_pipelines.launcher.cgroup_memory import MemoryCgroup

        path = self._cgroup_of(name)
        kills = MemoryCgroup(path, 1 if "/memory/" in str(path) else 2).oom_kills()
        return int(kills or 0)

    @staticmethod
    def _kill_cgroup(path: Path, timeout: float = 20) -> bool:
        """SIGKILL every process of the cgroup until it is empty; True when it is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
            except OSError:
                return True
            if not pids:
                return True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """Kill every process of the cluster (all live in its cgroups) and remove the cgroups;
        ``ray stop`` only if some process would not die."""
        if not all([self._kill_cgroup(path) for path in self.cgroups]):
            subprocess.run([*RAY_CLI, "stop", "--force"], env=self.env(), capture_output=True,
                           timeout=120)
        for path in self.cgroups:
            deadline = time.monotonic() + 20
            while path.exists() and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    path.rmdir()
                time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        if os.environ.get(ray_auth.TOKEN_PATH_ENV) == str(self.token_path):
            del os.environ[ray_auth.TOKEN_PATH_ENV]
        shutil.rmtree(self.secrets_dir, ignore_errors=True)

    def make_client(self) -> None:
        """Make this process a client of the cluster: CLUSTER_ENV and the token file in its
        environment, and Ray's cached config and token reloaded (Ray reads RAY_AUTH_MODE once, at
        import)."""
        os.environ.update({**CLUSTER_ENV, ray_auth.TOKEN_PATH_ENV: str(self.token_path)})
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()

    def __enter__(self) -> RayTestCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
