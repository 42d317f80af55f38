"""The compose file as docker-compose 1.29 resolves it: every service hardened the same way, the
Docker socket only where runs are launched/stopped, ports only on loopback for API + webserver."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import require
from tests.stack.compose_stack import COMPOSE_FILE, ComposeStack

SOCKET = "/var/run/docker.sock"


@pytest.fixture(scope="module")
def config() -> dict:
    require(shutil.which("docker-compose") is not None, "docker-compose (apt-get install docker-compose)")
    require(Path(SOCKET).exists(), f"Docker socket {SOCKET}")
    stack = ComposeStack(workdir=Path(tempfile.mkdtemp(prefix="e2i-compose-config-")))
    try:
        return yaml.safe_load(stack.compose("config").stdout)
    finally:
        shutil.rmtree(stack.workdir, ignore_errors=True)


def test_every_service_is_hardened(config: dict) -> None:
    services = config["services"]
    assert set(services) == {"postgres", "mlflow", "code-server", "webserver", "daemon", "api"}
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped", name
        assert float(service["cpus"]) > 0 and service["mem_limit"], name
        assert service["logging"]["driver"] == "json-file", name
        assert {"max-size", "max-file"} <= set(service["logging"]["options"]), name
        assert service["user"] not in ("", "root", "0", "0:0"), name
        for dependency in service.get("depends_on", {}).values():
            assert dependency["condition"] == "service_healthy", name


def test_socket_only_in_daemon_and_webserver(config: dict) -> None:
    with_socket = {name for name, service in config["services"].items()
                   if any(SOCKET in str(volume) for volume in service.get("volumes", []))}
    assert with_socket == {"daemon", "webserver"}


def test_networks_and_published_ports(config: dict) -> None:
    services = config["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == {"api", "webserver"}
    for ports in published.values():
        assert all(str(port).startswith("127.0.0.1:") for port in ports), ports
    on_frontend = {name for name, s in services.items() if "frontend" in s["networks"]}
    assert on_frontend == {"api", "webserver"}
    assert config["networks"]["backend"]["internal"] is True


def test_missing_secret_is_refused() -> None:
    require(shutil.which("docker-compose") is not None, "docker-compose")
    with tempfile.TemporaryDirectory() as tmp:
        env = Path(tmp) / "empty.env"
        env.write_text("COMPOSE_PROJECT_NAME=e2iconfigcheck\n")
        result = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "--env-file", str(env), "config"],
                                capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "POSTGRES_USER" in result.stderr or "POSTGRES_PASSWORD" in result.stderr
