"""A real Prometheus (Debian's 2.42, the one the monitoring image installs) scrapes the exporter
and the API and loads the starter rules; the values are read back through its HTTP query API."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest
import uvicorn
import yaml
from dagster._core.storage.dagster_run import DagsterRunStatus
from prometheus_client import CollectorRegistry, start_http_server

from e2i_api.main import create_app
from e2i_pipelines.launcher.promotion import FAILURE_TAG
from e2i_pipelines.monitoring.exporter import PlatformCollector
from tests.api.conftest import api_settings
from tests.conftest import require
from tests.costs.runs import add_run
from tests.monitoring.test_monitoring_compose import PROMETHEUS_DIR
from tests.support.dagster_processes import free_port
from tests.support.prometheus import query_prometheus


@pytest.fixture()
def api_port() -> Iterator[int]:
    """The API served by uvicorn (its Dagster webserver is down: e2i_api_dagster_up 0)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(api_settings(free_port(), dagster_timeout_seconds=1)),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def _prometheus(tmp_path: Path, targets: dict[str, int]) -> subprocess.Popen:
    """Prometheus on a free port scraping ``targets`` every second, with the stack's rules."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / "rules" / "*.yml")]
    for job in config["scrape_configs"]:
        job.pop("scrape_timeout", None)
        if job["job_name"] in targets:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{targets[job['job_name']]}"]}]
    config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] in targets]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"))
    proc.port = port  # type: ignore[attr-defined]
    return proc


def test_prometheus_reads_back_run_metrics(pg_instance: dg.DagsterInstance, api_port: int,
                                           tmp_path: Path) -> None:
    require(shutil.which("prometheus") is not None, "prometheus (apt-get install prometheus)")
    now = time.time()
    add_run(pg_instance, "causal_job", "heavy", start=now - 100, seconds=90, launched_before=2,
            first_step_after=4)
    add_run(pg_instance, "shap_job", "medium", start=now - 60, seconds=30,
            status=DagsterRunStatus.FAILURE, tags={FAILURE_TAG: "oom"})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector(pg_instance))
    exporter_port = free_port()
    server, thread = start_http_server(exporter_port, "127.0.0.1", registry=registry)
    prometheus = _prometheus(tmp_path, {"e2i-exporter": exporter_port, "e2i-api": api_port})
    try:
        port = prometheus.port
        (sample,) = query_prometheus(port, 'e2i_runs{status="SUCCESS",job_name="causal_job"}')
        assert sample["metric"]["tier"] == "heavy" and sample["value"][1] == "1"
        assert sample["metric"]["job"] == "e2i-exporter"  # the scrape job; ours is job_name
        (oom,) = query_prometheus(port, 'e2i_oom_kills_total{tier="medium"}')
        assert oom["value"][1] == "1"
        (duration,) = query_prometheus(port, 'e2i_run_duration_seconds_sum{tier="heavy"}')
        assert duration["value"][1] == "90"
        (latency,) = query_prometheus(port, 'e2i_run_launch_to_first_step_seconds_count{tier="heavy"}')
        assert latency["value"][1] == "1"
        (down,) = query_prometheus(port, "e2i_api_dagster_up")
        assert down["value"][1] == "0" and down["metric"]["job"] == "e2i-api"
        rules = httpx.get(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5).json()["data"]["groups"]
        loaded = {r["name"]: r["health"] for g in rules for r in g["rules"]}
        assert len(loaded) == 6 and "E2IDaemonNoHeartbeat" in loaded
        deadline = time.monotonic() + 30  # every rule evaluated without error
        while set(loaded.values()) != {"ok"} and time.monotonic() < deadline:
            time.sleep(1)
            rules = httpx.get(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5).json()["data"]["groups"]
            loaded = {r["name"]: r["health"] for g in rules for r in g["rules"]}
        assert set(loaded.values()) == {"ok"}, loaded
        # no daemon heartbeat in this instance: the absent() alert is pending
        alerts = httpx.get(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        assert "E2IDaemonHeartbeatsMissing" in {a["labels"]["alertname"] for a in alerts}
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        server.shutdown()
        thread.join(timeout=5)
