"""``python -m e2i_api`` / ``e2i-api``: serve the API with uvicorn on the configured address."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import uvicorn

from e2i_api.catalog_snapshot import write_snapshot
from e2i_api.core.config import get_settings
from e2i_api.core.metrics import MULTIPROC_FLAG


def main() -> None:
    settings = get_settings()
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker writes its metrics to files here; /metrics sums them over all workers.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="e2i-api-metrics-")
        os.environ[MULTIPROC_FLAG] = "1"
    # The catalog, resolved once for every worker (in a child process: the definitions stay out).
    write_snapshot(Path(tempfile.mkdtemp(prefix="e2i-api-catalog-")))
    uvicorn.run("e2i_api.main:create_app", factory=True, host=settings.bind_host, port=settings.bind_port,
                workers=settings.workers, access_log=False, log_level=settings.log_level.lower(),
                timeout_keep_alive=30)  # longer than clients keep idle connections (httpx: 5 s)


if __name__ == "__main__":
    main()
