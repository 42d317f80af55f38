"""Start real Dagster processes (webserver, daemon) for integration tests.

``write_instance_yaml`` makes a DAGSTER_HOME (Postgres storage when given, else SQLite);
``DagsterProcess`` starts ``dagster dev`` / ``dagster-daemon run`` in its own session with
default signal handlers and stops it with SIGINT, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = REPO_ROOT / "workspace.yaml"
# Through this interpreter, not console scripts: works in any venv the tests run from.
DAGSTER_CLI = [sys.executable, "-m", "dagster"]
DAGSTER_DAEMON_CLI = [sys.executable, "-m", "dagster._daemon"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_storage(db: Mapping[str, Any]) -> dict[str, Any]:
    """dagster.yaml ``storage:`` section for a ``postgres_db`` fixture value."""
    keys = ("username", "password", "hostname", "db_name", "port")
    # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; psycopg2 is what is installed.
    postgres_db = {**{k: db[k] for k in keys}, "scheme": "postgresql+psycopg2"}
    if str(db["hostname"]).startswith("/"):  # a Unix socket directory (inside a netns)
        postgres_db.update(hostname="", params={"host": db["hostname"]})
    return {"postgres": {"postgres_db": postgres_db}}


def write_instance_yaml(home: Path, sections: Mapping[str, Any]) -> Path:
    """Write ``home/dagster.yaml`` from ``sections`` (merged over run monitoring + run pools)."""
    home.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "telemetry": {"enabled": False},
        "run_monitoring": {"enabled": True, "poll_interval_seconds": 5},
        "concurrency": {"pools": {"granularity": "run", "default_limit": 1000}},
    }
    config.update(sections)
    path = home / "dagster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _reset_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


class DagsterProcess:
    """A Dagster CLI (or other service) process with a fresh session; use as a context manager."""

    def __init__(self, args: list[str], home: Path, env: Mapping[str, str] | None = None,
                 log_path: Path | None = None) -> None:
        self.args = args
        self.env = {**os.environ, "DAGSTER_HOME": str(home), **(env or {})}
        self.log_path = log_path or home / "dagster-process.log"
        self.proc: subprocess.Popen | None = None

    @property
    def name(self) -> str:
        return " ".join(self.args[1:4])

    def start(self) -> DagsterProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            self.args, env=self.env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_reset_signals,
        )
        return self

    def wait_until(self, ready: Callable[[], bool], timeout: float = 120.0) -> None:
        """Poll ``ready`` until true; raise with the log tail if the process dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - not ready yet
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} not ready in {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> DagsterProcess:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def dagster_dev(home: Path, port: int, env: Mapping[str, str] | None = None,
                workspace: Path = WORKSPACE, timeout: float = 300.0) -> DagsterProcess:
    """``dagster dev`` (webserver + daemon) on 127.0.0.1:port, started and ready."""
    proc = DagsterProcess(
        [*DAGSTER_CLI, "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
        home, env, log_path=home / "dagster-dev.log",
    ).start()
    try:
        proc.wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).is_success,
            timeout,
        )
    except BaseException:
        proc.stop()
        raise
    return proc


@contextlib.contextmanager
def dagster_dev_port(home: Path, env: Mapping[str, str] | None = None,
                     workspace: Path = WORKSPACE) -> Iterator[int]:
    """The port of a ``dagster dev`` on ``home``, ready; stopped on exit (the test fixtures' one
    start/stop of a webserver + daemon)."""
    port = free_port()
    with dagster_dev(home, port, env, workspace=workspace):
        yield port


def dagster_daemon(home: Path, env: Mapping[str, str] | None = None,
                   workspace: Path = WORKSPACE) -> DagsterProcess:
    """``dagster-daemon run`` on the workspace, started (readiness is the caller's business)."""
    return DagsterProcess(
        [*DAGSTER_DAEMON_CLI, "run", "-w", str(workspace)], home, env,
        log_path=home / "dagster-daemon.log",
    ).start()
