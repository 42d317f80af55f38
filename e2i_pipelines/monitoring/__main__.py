"""``python -m e2i_pipelines.monitoring [--port 9108] [--host 0.0.0.0]``: serve /metrics."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

import dagster as dg
from prometheus_client import CollectorRegistry, start_http_server

from e2i_pipelines.monitoring.exporter import PlatformCollector


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="e2i platform metrics for Prometheus")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9108)
    parser.add_argument("--backfill-seconds", type=float, default=3600.0,
                        help="runs that ended this long before start still enter the histograms")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    instance = dg.DagsterInstance.get()  # $DAGSTER_HOME/dagster.yaml
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector(instance, args.backfill_seconds))
    server, thread = start_http_server(args.port, args.host, registry=registry)
    logging.getLogger("e2i.exporter").info(f"serving /metrics on {args.host}:{args.port}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    thread.join(timeout=5)


if __name__ == "__main__":
    main()
