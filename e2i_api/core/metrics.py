"""Prometheus metrics of the API: requests by route template and status, latency, Dagster up.

A pure ASGI middleware (streams pass through untouched). The route label is the matched route's
template (``/v1/runs/{run_id}``), ``<unmatched>`` otherwise, so label sets stay bounded. Each app
has its own registry (tests build many apps). With several uvicorn workers
(``e2i_api.__main__`` sets ``PROMETHEUS_MULTIPROC_DIR`` and ``E2I_API_METRICS_MULTIPROC``) every
worker writes its values to files there and ``exposition()`` sums them over the workers. The
flag, not the directory variable, decides: importing Feast sets ``PROMETHEUS_MULTIPROC_DIR`` in
any process that imports it.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
UNMATCHED = "<unmatched>"
MULTIPROC_FLAG = "E2I_API_METRICS_MULTIPROC"


def summed_over_workers() -> bool:
    """True in an API worker started by ``python -m e2i_api`` with several workers."""
    return os.environ.get(MULTIPROC_FLAG) == "1" and values.ValueClass is not values.MutexValue


class ApiMetrics:
    """The API's metric families in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("e2i_api_requests", "HTTP requests answered, by route and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("e2i_api_request_duration_seconds",
                                 "Time to answer an HTTP request, by route and status.",
                                 ["method", "route", "status"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.in_progress = Gauge("e2i_api_requests_in_progress", "HTTP requests being answered.",
                                 registry=self.registry, multiprocess_mode="livesum")
        self.dagster_up = Gauge("e2i_api_dagster_up",
                                "1 when the Dagster webserver answered the last scrape's check.",
                                registry=self.registry, multiprocess_mode="mostrecent")
        self.dagster_check = Gauge("e2i_api_dagster_check_duration_seconds",
                                   "Time the last Dagster check took.", registry=self.registry,
                                   multiprocess_mode="mostrecent")

    def exposition(self) -> bytes:
        """The text exposition: this app's registry, or the sum over all workers' files."""
        if not summed_over_workers():
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        return generate_latest(merged)


def route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED


class MetricsMiddleware:
    """Counts and times every HTTP request (status 500 when the app raised)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_progress.dec()
            labels = (scope["method"], route_template(scope), str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - started)
