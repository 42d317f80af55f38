"""``python -m e2i_pipelines.scaler dry-run``: reports the decision and its inputs, writes nothing."""

import json
import os
import subprocess
import sys

import dagster as dg
import pytest

from e2i_pipelines.scaler.cli import main
from e2i_pipelines.scaler.evaluation import current_pool_limit
from tests.scaler.queued_runs import queue_run
from tests.support.dagster_processes import REPO_ROOT, write_instance_yaml


def _config(tmp_path):
    path = tmp_path / "scaler.yaml"
    path.write_text("max_heavy_runs: 2\ncapacity: {source: host, cpus: 4, memory: 8g}\n"
                    "heavy_profile: {cpus: 1, memory: 1g}\n")
    return path


def test_dry_run_reports_and_writes_nothing(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    write_instance_yaml(home, {})
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        for _ in range(3):
            queue_run(instance, "probe_heavy_job")

    assert main(["dry-run", "--config", str(_config(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "would set pool e2i-heavy limit to 2 (now None)" in out
    assert "bound by:       max" in out
    assert "demand:         3 = 3 queued + 0 running" in out
    assert "4 heavy run(s) fit" in out

    assert main(["dry-run", "--config", str(_config(tmp_path)), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["decision"]["allowed"] == 2 and record["decision"]["capacity_slots"] == 4

    with dg.DagsterInstance.get() as instance:
        assert current_pool_limit(instance) is None  # nothing written


def test_dry_run_errors_are_clear(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_heavy_runs: 3\nmax_heavy_runs: 1\n")
    assert main(["dry-run", "--config", str(bad)]) == 2
    assert "max_heavy_runs (1) is less than min_heavy_runs (3)" in capsys.readouterr().err
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["dry-run", "--config", str(_config(tmp_path))]) == 2
    assert "DAGSTER_HOME is not set" in capsys.readouterr().err


def test_module_entry_point(tmp_path):
    home = tmp_path / "home"
    write_instance_yaml(home, {})
    proc = subprocess.run(
        [sys.executable, "-m", "e2i_pipelines.scaler", "dry-run", "--config", str(_config(tmp_path))],
        cwd=REPO_ROOT, env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "would set pool e2i-heavy limit to 0 (now None)" in proc.stdout
    assert "capacity:       not measured (no heavy demand)" in proc.stdout


@pytest.mark.docker
def test_dry_run_with_the_tiered_docker_launcher_measures_the_engine(
        tmp_path, monkeypatch, capsys, docker_client):
    home = tmp_path / "home"
    write_instance_yaml(home, {"run_launcher": {
        "module": "e2i_pipelines.launcher.tiered_docker_run_launcher",
        "class": "TieredDockerRunLauncher",
        "config": {"image": "e2i:local", "tiers": {"heavy": {"cpus": 1, "memory": "2g"}}},
    }})
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        for _ in range(3):
            queue_run(instance, "probe_heavy_job")
    config = tmp_path / "scaler.yaml"
    config.write_text("max_heavy_runs: 4\n")

    assert main(["dry-run", "--config", str(config), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    info = docker_client.info()
    capacity, decision = record["capacity"], record["decision"]
    assert capacity["source"] == "docker"
    assert (capacity["total_cpus"], capacity["total_memory_bytes"]) == (info["NCPU"], info["MemTotal"])
    assert record["heavy_profile"] == {"cpus": 1.0, "memory_bytes": 2 * 1024**3, "source": "launcher"}
    expected_slots = int(min(capacity["free_cpus"] / 1.0, capacity["free_memory_bytes"] / 2**31))
    assert decision["capacity_slots"] == expected_slots
    assert decision["allowed"] == min(expected_slots, 3)
