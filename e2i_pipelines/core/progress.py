"""Progress of long loops reported to the Dagster log: done/total, rate, ETA."""

from __future__ import annotations

import logging
import time
from typing import Any


class Progress:
    """Call ``advance(n)`` per chunk; logs at most every ``every_seconds`` (and at the end)."""

    def __init__(self, log: Any, total: int, label: str, unit: str = "rows",
                 every_seconds: float = 5.0) -> None:
        self.log = log or logging.getLogger("e2i")
        self.total, self.label, self.unit = total, label, unit
        self.every = every_seconds
        self.done = 0
        self.started = time.perf_counter()
        self._last = self.started

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last >= self.every or self.done >= self.total:
            self._last = now
            eta = (self.total - self.done) / self.rate if self.rate else float("nan")
            self.log.info(
                f"{self.label}: {self.done:,}/{self.total:,} {self.unit} "
                f"({100 * self.done / max(self.total, 1):.0f}%), {self.rate:,.0f} {self.unit}/s, "
                f"eta {eta:.0f}s"
            )
