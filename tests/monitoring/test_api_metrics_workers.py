"""With several API workers, /metrics sums the request counts of all of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from e2i_api.core.metrics import MULTIPROC_FLAG

WORKER = """
from e2i_api.core.metrics import ApiMetrics
m = ApiMetrics()
for _ in range({n}):
    m.requests.labels("GET", "/v1/runs/{{run_id}}", "200").inc()
"""

EXPOSE = """
from e2i_api.core.metrics import ApiMetrics
print(ApiMetrics().exposition().decode())
"""


def _python(code: str, multiproc_dir: Path) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir), MULTIPROC_FLAG: "1"}
    return subprocess.run([sys.executable, "-c", code], env=env, check=True,
                          capture_output=True, text=True, timeout=120).stdout


def test_exposition_sums_over_worker_processes(tmp_path: Path) -> None:
    _python(WORKER.format(n=3), tmp_path)
    _python(WORKER.format(n=4), tmp_path)
    text = _python(EXPOSE, tmp_path)
    line = next(row for row in text.splitlines()
                if row.startswith("e2i_api_requests_total{") and 'route="/v1/runs/{run_id}"' in row)
    assert float(line.rsplit(" ", 1)[1]) == 7.0


def test_a_stray_multiproc_dir_does_not_hide_this_apps_metrics(tmp_path: Path, monkeypatch) -> None:
    """Importing Feast sets PROMETHEUS_MULTIPROC_DIR; a single API process still shows its own."""
    import feast.metrics  # noqa: F401 - sets PROMETHEUS_MULTIPROC_DIR in this process

    from e2i_api.core.metrics import ApiMetrics

    monkeypatch.delenv(MULTIPROC_FLAG, raising=False)
    metrics = ApiMetrics()
    metrics.requests.labels("GET", "/health", "200").inc()
    assert b'e2i_api_requests_total{method="GET",route="/health",status="200"} 1.0' in metrics.exposition()
