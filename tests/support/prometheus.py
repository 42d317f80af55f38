"""Reading a real Prometheus back through its HTTP instant-query API."""

from __future__ import annotations

import time

import httpx


def query_prometheus(port: int, expr: str, timeout: float = 60, interval: float = 0.5) -> list[dict]:
    """Poll ``/api/v1/query`` on 127.0.0.1:``port`` until ``expr`` returns a sample.

    A starting Prometheus answers 503 "Service Unavailable" (plain text) until its TSDB is open,
    so only a 200 is read as JSON; anything else is retried until ``timeout``."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}, timeout=10)
            last = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code == 200:
                body = response.json()
                if body["status"] == "success" and body["data"]["result"]:
                    return body["data"]["result"]
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(interval)
    raise AssertionError(f"Prometheus returned nothing for {expr!r} within {timeout}s (last: {last})")
