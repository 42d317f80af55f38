"""A docker-compose e2i stack under test: its own project name, env file, instance config, ports.

``ComposeStack`` renders ``docker/dagster.compose.yaml`` for its project (small tier profiles,
the project's data volume and stack label), writes an env file and fresh Docker secrets
(scripts/make_secrets.sh into its own directory), and drives
``docker-compose`` (Debian's 1.29) and the stack scripts (health, backup, restore) against it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SERVICES = {"postgres", "mlflow", "code-server", "webserver", "daemon", "api", "engine-proxy",
                    "webserver-viewer", "caddy", "s3"}
"""Services `docker-compose config` lists for docker-compose.yml (s3: profile s3 only)."""
COMPOSE_FILE = REPO / "docker" / "docker-compose.yml"
INSTANCE_TEMPLATE = REPO / "docker" / "dagster.compose.yaml"
DATA_DIR = "/var/lib/e2i/data"
STACK_LABEL = "e2i.stack"

TEST_TIERS: dict[str, dict[str, Any]] = {
    "light": {"cpus": 1, "memory": "1g", "memswap": "1g", "pids": 256, "shm": "64m"},
    "medium": {"cpus": 1, "memory": "1536m", "memswap": "1536m", "pids": 256, "shm": "64m"},
    "heavy": {"cpus": 2, "memory": "2g", "memswap": "2g", "pids": 512, "shm": "128m"},
}
"""Tier profiles for a 2-CPU test host (light 1 CPU/1g, heavy 2 CPU/2g). A run container holds
two Python processes that import the whole code location (run worker + multiprocess step
worker, ~350 MB each): at 512m the page cache is squeezed out and imports crawl."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def render_instance_config(project: str, tiers: dict[str, dict[str, Any]],
                           monitoring_seconds: float = 5) -> dict[str, Any]:
    """docker/dagster.compose.yaml for ``project``: its data volume, stack label, ``tiers`` and a
    run-monitoring poll of ``monitoring_seconds``."""
    config = yaml.safe_load(INSTANCE_TEMPLATE.read_text())
    launcher = config["run_launcher"]["config"]
    launcher["container_kwargs"]["volumes"] = [f"{project}_data:{DATA_DIR}", f"{project}_run_secrets:/run/secrets:ro"]
    launcher["container_kwargs"]["labels"] = {STACK_LABEL: project}
    launcher["tiers"] = tiers
    config["run_monitoring"]["poll_interval_seconds"] = monitoring_seconds
    config["run_coordinator"]["config"]["dequeue_interval_seconds"] = 2
    return config


@dataclass
class ComposeStack:
    """One compose project of the e2i stack, in its own temporary directory."""

    workdir: Path
    project: str = field(default_factory=lambda: f"e2ismoke{uuid.uuid4().hex[:8]}")
    tiers: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(TEST_TIERS))
    extra_compose_files: list[Path] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    """Compose profiles every command runs with (e.g. ``monitoring``)."""
    monitoring_seconds: float = 5
    image: str = os.environ.get("E2I_IMAGE", "e2i:local")
    base_image: str = os.environ.get("E2I_BASE_IMAGE", "e2i-base:bookworm")
    cold_start_seconds: float = 0.0
    build_seconds: float = 0.0
    healthy_after: dict[str, float] = field(default_factory=dict)
    _services: list[str] = field(default_factory=list)
    _caddy_ca: str | None = None

    def __post_init__(self) -> None:
        self.api_key = secrets.token_urlsafe(24)
        self.api_port = free_port()
        self.webserver_port = free_port()
        self.https_port = free_port()
        self.prometheus_port = free_port()  # used with the monitoring override only
        self.instance_file = self.workdir / "dagster.yaml"
        self.env_file = self.workdir / "stack.env"
        self.instance_file.write_text(yaml.safe_dump(
            render_instance_config(self.project, self.tiers, self.monitoring_seconds)))
        self.instance_file.chmod(0o644)
        keys = [{"name": "smoke", "sha256": hashlib.sha256(self.api_key.encode()).hexdigest(),
                 # admin: the chaos suite launches runs over GraphQL (no e2i/api-client tag)
                 # and follows them through the API
                 "scopes": ["runs:read", "runs:write", "admin"]}]
        env = {
            "COMPOSE_PROJECT_NAME": self.project,
            "E2I_BASE_IMAGE": self.base_image,
            "E2I_IMAGE": self.image,
            "E2I_POSTGRES_IMAGE": "e2i-postgres:local",
            "POSTGRES_USER": "e2i",
            "E2I_SECRETS_DIR": str(self.workdir / "secrets"),
            "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
            "E2I_API_API_KEYS": json.dumps(keys, separators=(",", ":")),
            "E2I_BIND_ADDRESS": "127.0.0.1",
            "E2I_API_PORT": str(self.api_port),
            "E2I_WEBSERVER_PORT": str(self.webserver_port),
            "E2I_HTTPS_PORT": str(self.https_port),  # Caddy's, never the host's 443/80
            "E2I_HTTP_PORT": str(free_port()),
            "E2I_PROMETHEUS_PORT": str(self.prometheus_port),
            "E2I_DAGSTER_YAML": str(self.instance_file),
        }
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        self.env_file.chmod(0o600)
        self.script("make_secrets.sh", timeout=60)

    def secret(self, name: str) -> str:
        """One of the stack's Docker secrets (e.g. ``api_pg_password``)."""
        return (self.workdir / "secrets" / name).read_text()

    # -- commands ------------------------------------------------------------------------------
    @property
    def script_env(self) -> dict[str, str]:
        """Environment for scripts/*.sh and docker-compose: this stack only."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("E2I_", "COMPOSE_"))}
        return {**env, "E2I_ENV_FILE": str(self.env_file), "COMPOSE_PROJECT_NAME": self.project}

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        files = [arg for path in (COMPOSE_FILE, *self.extra_compose_files) for arg in ("-f", str(path))]
        profiles = [arg for name in self.profiles for arg in ("--profile", name)]
        cmd = ["docker-compose", *files, *profiles, "--env-file", str(self.env_file), "-p", self.project, *args]
        return self.run(cmd, timeout=timeout, check=check)

    def script(self, name: str, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(["bash", str(REPO / "scripts" / name), *args], timeout=timeout, check=check)

    def run(self, cmd: list[str], timeout: float, check: bool) -> subprocess.CompletedProcess:
        result = subprocess.run(cmd, cwd=REPO, env=self.script_env, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    # -- state ---------------------------------------------------------------------------------
    def services(self) -> list[str]:
        """Services this stack starts: those without a profile or in one of ``profiles``
        (docker-compose 1.29's ``config --services`` lists every profile's services)."""
        config = yaml.safe_load(self.compose("config").stdout)
        return [name for name, service in config["services"].items()
                if not service.get("profiles") or set(service["profiles"]) & set(self.profiles)]

    def container_id(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def health(self, docker_client: Any) -> dict[str, str]:
        """Service -> health status ('missing' when it has no container). One engine query, by
        compose's labels, so polling is cheap and the cold-start measurement fine-grained."""
        if not self._services:
            self._services = self.services()
        status = dict.fromkeys(self._services, "missing")
        containers = docker_client.api.containers(
            all=True, filters={"label": f"com.docker.compose.project={self.project}"})
        for summary in containers:
            service = summary["Labels"].get("com.docker.compose.service")
            if service in status:
                state = docker_client.api.inspect_container(summary["Id"])["State"]
                status[service] = state.get("Health", {}).get("Status", state["Status"])
        return status

    def wait_healthy(self, docker_client: Any, timeout: float, start: float | None = None,
                     services: set[str] | None = None) -> float:
        """Seconds (from ``start``, default now) until every service (or those in ``services``) is
        healthy; records when each service first was in ``healthy_after``; raises with the last
        states on timeout."""
        start = time.monotonic() if start is None else start
        self.healthy_after = {}
        status: dict[str, str] = {}
        while time.monotonic() - start < timeout:
            status = self.health(docker_client)
            if services is not None:
                status = {name: state for name, state in status.items() if name in services}
            for service, state in status.items():
                if state == "healthy":
                    self.healthy_after.setdefault(service, round(time.monotonic() - start, 1))
            if status and all(s == "healthy" for s in status.values()):
                return time.monotonic() - start
            time.sleep(2)
        raise AssertionError(f"stack {self.project} not healthy after {timeout:.0f}s: {status}\n"
                             + self.compose("logs", "--tail", "30", check=False).stdout[-6000:])

    def run_containers(self, docker_client: Any) -> list[Any]:
        """Run containers the stack's launcher started (by the stack label)."""
        return docker_client.containers.list(all=True, filters={"label": f"{STACK_LABEL}={self.project}"})

    def remove_run_containers(self, docker_client: Any) -> None:
        for container in self.run_containers(docker_client):
            container.remove(force=True)

    def api_client(self, timeout: float = 60) -> httpx.Client:
        """The API as clients reach it: through Caddy (TLS, checked against the stack's own
        internal CA), with the stack's key."""
        if self._caddy_ca is None:
            self._caddy_ca = self.compose("exec", "-T", "caddy", "cat",
                                          "/data/caddy/pki/authorities/local/root.crt", timeout=60).stdout
        return httpx.Client(base_url=f"https://localhost:{self.https_port}", timeout=timeout,
                            headers={"X-API-Key": self.api_key},
                            verify=ssl.create_default_context(cadata=self._caddy_ca))

    def down(self, docker_client: Any) -> None:
        """Remove run containers, then every service, network and volume of the project."""
        self._caddy_ca = None  # the caddy-data volume goes: a new CA on the next start
        self.remove_run_containers(docker_client)
        self.compose("down", "-v", "--remove-orphans", "-t", "20", timeout=300, check=False)

    def cleanup(self, docker_client: Any) -> None:
        self.down(docker_client)
        shutil.rmtree(self.workdir, ignore_errors=True)


def image_present(docker_client: Any, name: str) -> bool:
    try:
        docker_client.images.get(name)
    except Exception:  # noqa: BLE001 - any lookup failure means "not there"
        return False
    return True


@contextlib.contextmanager
def running_stack(docker_client: Any, timeout: float = 900, build: tuple[str, ...] = ("postgres",),
                  **options: Any) -> Iterator[ComposeStack]:
    """A fresh stack (own project, volumes, ports; ``options`` go to ComposeStack; the services in
    ``build`` built first) brought up and healthy, its cold start measured; removed with its
    volumes afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="e2i-stack-"))
    workdir.chmod(0o755)
    stack = ComposeStack(workdir=workdir, **options)
    try:
        started = time.monotonic()
        stack.compose("build", *build, timeout=900)
        stack.build_seconds = time.monotonic() - started
        start = time.monotonic()
        up = stack.compose("up", "-d", timeout=timeout, check=False)
        stack.cold_start_seconds = stack.wait_healthy(docker_client, timeout=timeout, start=start)
        print(f"\nstack {stack.project}: cold start (up -> all healthy) {stack.cold_start_seconds:.1f}s"
              f" (up exited {up.returncode}; build {stack.build_seconds:.1f}s);"
              f" healthy after: {stack.healthy_after}")
        yield stack
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            stack.cleanup(docker_client)
