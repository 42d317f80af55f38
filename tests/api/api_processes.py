"""Start the real API (``python -m e2i_api``, uvicorn) as a subprocess for integration tests and
the load benchmark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.support.dagster_processes import REPO_ROOT


class ApiProcess:
    """``python -m e2i_api`` on 127.0.0.1:port in its own session; stopped with SIGINT."""

    def __init__(self, port: int, env: Mapping[str, str], log_path: Path) -> None:
        self.port = port
        self.env = {**os.environ, "E2I_API_BIND_HOST": "127.0.0.1", "E2I_API_BIND_PORT": str(port), **env}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> ApiProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "e2i_api"], env=self.env, cwd=REPO_ROOT,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"API exited early:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).is_success:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"API on port {self.port} not up in {timeout}s")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> ApiProcess:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def api_env(dagster_port: int, keys: list[dict], database_url: str | None = None, workers: int = 1,
            **extra: str) -> dict[str, str]:
    """Environment of an API process on a local webserver (``extra``: more E2I_API_* values)."""
    env = {"E2I_API_DAGSTER_PORT": str(dagster_port), "E2I_API_API_KEYS": json.dumps(keys),
           "E2I_API_WORKERS": str(workers), "E2I_API_LOG_LEVEL": "INFO", "E2I_API_MLFLOW_TRACKING_URI": "",
           **extra}
    if database_url:
        env["E2I_API_DATABASE_URL"] = database_url
    return env
