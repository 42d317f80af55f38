"""Launch real runs of workspace jobs through a Postgres-backed instance with the tiered launcher.

Used by the Docker integration tests and benchmarks/launcher_latency.py. ``LauncherHarness``
writes a DAGSTER_HOME whose dagster.yaml uses TieredDockerRunLauncher with small test profiles,
loads workspace.yaml once, and creates + submits runs the way ``dagster job launch`` does.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker.errors
from dagster import DagsterEventType, DagsterInstance
from dagster._cli.job import _create_run
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration
from dagster_docker.docker_run_launcher import DOCKER_CONTAINER_ID_TAG

import docker
from tests.support.dagster_processes import WORKSPACE, postgres_storage, write_instance_yaml

IMAGE = "e2i:local"
TEST_PROFILES = {
    # A run worker plus its step subprocess, both importing the code location, use ~450 MB
    # before the step allocates anything: light leaves ~300 MB of headroom.
    "light": {"cpus": 1, "memory": "768m", "memswap": "768m", "pids": 256, "shm": "64m"},
    "medium": {"cpus": 1, "memory": "1280m", "memswap": "1280m", "pids": 512, "shm": "128m"},
    "heavy": {"cpus": 2, "memory": "1536m", "memswap": "1536m", "pids": 1024, "shm": "256m"},
}
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def instance_sections(db: Mapping[str, Any], promote_on_oom: bool = True,
                      profiles: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """dagster.yaml sections: Postgres storage, tiered launcher (host network), fast monitoring.

    ``profiles`` replace :data:`TEST_PROFILES` as the launcher's tiers (e.g. the replay's ladder)."""
    storage = postgres_storage(db)
    storage["postgres"]["postgres_db"]["scheme"] = "postgresql+psycopg2"
    return {
        "storage": storage,
        # Submitted runs launch at once from the submitting process (no queue daemon needed).
        "run_coordinator": {
            "module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator",
        },
        "run_launcher": {
            "module": "e2i_pipelines.launcher.tiered_docker_run_launcher",
            "class": "TieredDockerRunLauncher",
            "config": {
                "image": IMAGE, "network": "host", "tiers": dict(profiles or TEST_PROFILES),
                "promote_on_oom": promote_on_oom,
            },
        },
        "run_monitoring": {
            "enabled": True, "poll_interval_seconds": 1, "max_resume_run_attempts": 0,
            "start_timeout_seconds": 600, "cancel_timeout_seconds": 60,
        },
    }


def probe_config(tier: str, allocate_mb: int = 0, hold_seconds: float = 0.0) -> dict[str, Any]:
    return {"ops": {f"probe_{tier}": {"config": {"allocate_mb": allocate_mb, "hold_seconds": hold_seconds}}}}


class LauncherHarness:
    """A real instance + loaded workspace; create, launch and watch runs."""

    def __init__(self, home: Path, db: Mapping[str, Any], promote_on_oom: bool = True,
                 sections: Mapping[str, Any] | None = None, workspace: Path = WORKSPACE,
                 profiles: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """``sections`` replace the instance_sections() defaults (e.g. another run launcher);
        ``profiles`` replace the test tier profiles."""
        self.home = home
        self.workspace = workspace
        write_instance_yaml(home, {**instance_sections(db, promote_on_oom, profiles), **(sections or {})})
        self.instance = DagsterInstance.from_config(str(home))
        self.context = WorkspaceProcessContext(self.instance, WorkspaceFileTarget(paths=[str(workspace)]))

    def close(self) -> None:
        """Remove this instance's run containers, stop the code server, dispose the instance."""
        containers = [run.tags[DOCKER_CONTAINER_ID_TAG] for run in self.instance.get_runs()
                      if run.tags.get(DOCKER_CONTAINER_ID_TAG)]
        client = docker.from_env() if containers else None
        for container_id in containers:
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(container_id).remove(force=True)
        self.context.__exit__(None, None, None)
        self.instance.dispose()

    def launch(self, job_name: str, run_config: Mapping[str, Any] | None = None,
               tags: Mapping[str, str] | None = None) -> str:
        """Create and submit a run of ``job_name`` (launched at once: default run coordinator)."""
        workspace = self.context.create_request_context()
        location = workspace.get_code_location("e2i")
        repo = next(iter(location.get_repositories().values()))
        run = _create_run(
            instance=self.instance, code_location=location, remote_repo=repo,
            remote_job=repo.get_full_job(job_name), run_config=dict(run_config or {}),
            tags=dict(tags or {}), op_selection=None, run_id=None,
        )
        self.instance.submit_run(run.run_id, workspace)
        return run.run_id

    def run(self, run_id: str) -> DagsterRun:
        run = self.instance.get_run_by_id(run_id)
        assert run is not None, run_id
        return run

    def wait_for(self, run_id: str, statuses: set[DagsterRunStatus], timeout: float = 600) -> DagsterRun:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if run.status in statuses:
                return run
            time.sleep(0.5)
        raise AssertionError(f"run {run_id} still {self.run(run_id).status} after {timeout}s:\n{self.log_text(run_id)}")

    def wait_for_step_start(self, run_id: str, timeout: float = 600) -> float:
        """Timestamp of the run's first STEP_START."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            starts = self.instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
            if starts:
                return starts[0].timestamp
            time.sleep(0.3)
        raise AssertionError(f"run {run_id} started no step in {timeout}s:\n{self.log_text(run_id)}")

    def container_id(self, run_id: str) -> str:
        return self.run(run_id).tags[DOCKER_CONTAINER_ID_TAG]

    def monitor_once(self) -> None:
        """One pass of the daemon's run monitoring (health checks through the launcher)."""
        list(execute_run_monitoring_iteration(self.context, logging.getLogger("e2i.test.monitor")))

    def messages(self, run_id: str, event_type: DagsterEventType | None = None) -> list[str]:
        entries = self.instance.all_logs(run_id, of_type=event_type) if event_type else self.instance.all_logs(run_id)
        return [entry.message or (entry.dagster_event.message if entry.dagster_event else "") or "" for entry in entries]

    def log_text(self, run_id: str) -> str:
        return "\n".join(f"- {m}" for m in self.messages(run_id))[-4000:]


def wait_container_exit(docker_client: Any, container_id: str, timeout: float = 120) -> dict[str, Any]:
    """Docker ``State`` once the container has stopped."""
    container = docker_client.containers.get(container_id)
    deadline = time.monotonic() + timeout
    while container.status not in ("exited", "dead") and time.monotonic() < deadline:
        time.sleep(0.5)
        container.reload()
    assert container.status in ("exited", "dead"), f"container still {container.status}"
    return container.attrs["State"]

