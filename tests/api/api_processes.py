"""Start the real API (``python -m e2i_api``, uvicorn) as a subprocess for integration tests and
the load benchmark."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.api.conftest import UNLIMITED
from tests.support.dagster_processes import DagsterProcess


class ApiProcess(DagsterProcess):
    """``python -m e2i_api`` on 127.0.0.1:port in its own session; stopped with SIGINT."""

    def __init__(self, port: int, env: Mapping[str, str], log_path: Path) -> None:
        super().__init__([sys.executable, "-m", "e2i_api"], log_path.parent,
                         {"E2I_API_BIND_HOST": "127.0.0.1", "E2I_API_BIND_PORT": str(port), **env},
                         log_path)
        self.port = port

    @property
    def name(self) -> str:
        return f"API on port {self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> ApiProcess:
        super().start()
        try:
            self.wait_until(lambda: httpx.get(f"{self.url}/health", timeout=2).is_success, timeout)
        except Exception:
            self.stop()
            raise
        return self


def api_env(dagster_port: int, keys: list[dict], database_url: str | None = None, workers: int = 1,
            **extra: str) -> dict[str, str]:
    """Environment of an API process on a local webserver, quotas out of the way (``extra``: more
    E2I_API_* values)."""
    env = {"E2I_API_DAGSTER_PORT": str(dagster_port), "E2I_API_API_KEYS": json.dumps(keys),
           "E2I_API_WORKERS": str(workers), "E2I_API_LOG_LEVEL": "INFO", "E2I_API_MLFLOW_TRACKING_URI": "",
           **{f"E2I_API_{k.upper()}": str(v) for k, v in UNLIMITED.items()}, **extra}
    if database_url:
        env["E2I_API_DATABASE_URL"] = database_url
    return env
