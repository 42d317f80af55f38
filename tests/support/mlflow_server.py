"""A real MLflow tracking server on loopback for tests: one store that every process (and every
Ray node) reaches over HTTP, artifacts proxied to an object store (moto's S3 in the tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.dagster_processes import free_port


@contextmanager
def mlflow_server(folder: Path, artifacts: str, env: dict[str, str] | None = None,
                  timeout: float = 120) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 with a SQLite store in ``folder`` and ``--serve-artifacts``
    into ``artifacts`` (e.g. ``s3://bucket/mlflow``; the S3 endpoint and key in ``env``). Yields
    its URL; stopped afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(folder / "mlflow-server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", artifacts, "--serve-artifacts"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:  # noqa: S310
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: "
                                   f"{(folder / 'mlflow-server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
