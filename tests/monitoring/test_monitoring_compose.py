"""Compose profile ``monitoring`` (docker/docker-compose.monitoring.yml) as docker-compose 1.29
resolves it: the exporter and Prometheus hardened like every service, Prometheus scrapes the
services that exist on the ports they listen on, and the starter rules pass promtool."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import require
from tests.stack.compose_stack import COMPOSE_FILE, DEFAULT_SERVICES, ComposeStack

MONITORING_FILE = COMPOSE_FILE.with_name("docker-compose.monitoring.yml")
PROMETHEUS_DIR = COMPOSE_FILE.parent / "prometheus"


@pytest.fixture(scope="module")
def stack() -> Iterator[ComposeStack]:
    require(shutil.which("docker-compose") is not None, "docker-compose (apt-get install docker-compose)")
    require(Path("/var/run/docker.sock").exists(), "Docker socket")
    stack = ComposeStack(workdir=Path(tempfile.mkdtemp(prefix="e2i-compose-monitoring-")))
    yield stack
    shutil.rmtree(stack.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def config(stack: ComposeStack) -> dict:
    cmd = ["docker-compose", "-f", str(COMPOSE_FILE), "-f", str(MONITORING_FILE), "--env-file",
           str(stack.env_file), "-p", stack.project, "--profile", "monitoring", "config"]
    return yaml.safe_load(stack.run(cmd, timeout=120, check=True).stdout)


def test_profile_adds_exporter_and_prometheus_hardened(config: dict) -> None:
    services = config["services"]
    assert set(services) == DEFAULT_SERVICES | {"exporter", "prometheus"}
    for name in ("exporter", "prometheus"):
        service = services[name]
        assert service["profiles"] == ["monitoring"]
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped"
        assert float(service["cpus"]) > 0 and service["mem_limit"] == service["memswap_limit"]
        assert service["logging"]["driver"] == "json-file"
        assert service["user"] not in ("", "root", "0", "0:0")
        assert service["cap_drop"] == ["ALL"] and not service.get("cap_add"), name
        assert service["security_opt"] == ["no-new-privileges:true"] and service["read_only"] is True, name
        for dependency in service["depends_on"].values():
            assert dependency["condition"] == "service_healthy"
    exporter, prometheus = services["exporter"], services["prometheus"]
    assert list(exporter["networks"]) == ["backend"]
    assert not exporter.get("ports")
    assert not any("docker.sock" in str(v) for v in exporter["volumes"])
    assert exporter["environment"]["DAGSTER_PG_HOST"] == services["daemon"]["environment"]["DAGSTER_PG_HOST"]
    # The read-only exporter role (docker/postgres/roles.sql), its password a Docker secret.
    assert exporter["environment"]["DAGSTER_PG_USERNAME"] == "e2i_exporter"
    assert exporter["environment"]["DAGSTER_PG_PASSWORD_FILE"] == "/run/secrets/exporter_pg_password"
    assert [s if isinstance(s, str) else s["source"] for s in exporter["secrets"]] == ["exporter_pg_password"]
    ports = prometheus["ports"]
    assert len(ports) == 1 and str(ports[0]).startswith("127.0.0.1:")
    assert prometheus["build"]["args"]["BASE_IMAGE"] == "e2i-base:bookworm"
    assert {"frontend", "backend"} <= set(prometheus["networks"])


def test_prometheus_scrapes_the_services_on_their_ports(config: dict) -> None:
    scrape = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())["scrape_configs"]
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in scrape}
    assert targets["e2i-api"] == "api:8000"  # E2I_API_BIND_PORT
    assert config["services"]["api"]["environment"]["E2I_API_BIND_PORT"] == "8000"
    assert targets["e2i-exporter"] == "exporter:9108"
    assert "9108" in config["services"]["exporter"]["command"]


def test_default_stack_is_unchanged(stack: ComposeStack) -> None:
    services = yaml.safe_load(stack.compose("config").stdout)["services"]
    assert set(services) == DEFAULT_SERVICES


def test_rules_and_config_pass_promtool() -> None:
    require(shutil.which("promtool") is not None, "promtool (apt-get install prometheus)")
    rules = subprocess.run(["promtool", "check", "rules", *map(str, (PROMETHEUS_DIR / "rules").glob("*.yml"))],
                           capture_output=True, text=True, timeout=60)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 6 rules found" in rules.stdout
