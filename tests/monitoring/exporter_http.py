"""The platform exporter served over HTTP on loopback for a test, and one scrape of it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import httpx
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from e2i_pipelines.monitoring.exporter import PlatformCollector
from tests.support.dagster_processes import free_port


@contextmanager
def exporter_port(instance: dg.DagsterInstance, backfill_seconds: float = 3600) -> Iterator[int]:
    """A ``PlatformCollector`` on ``instance`` behind a real HTTP server; yields its port."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector(instance, backfill_seconds=backfill_seconds))
    port = free_port()
    server, thread = start_http_server(port, "127.0.0.1", registry=registry)
    try:
        yield port
    finally:
        server.shutdown()
        thread.join(timeout=5)


def scrape(port: int) -> dict:
    """Every sample of ``/metrics`` keyed by (name, sorted labels)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}
