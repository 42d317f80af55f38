"""Predict a run's peak memory from past runs of the same steps (pure; no I/O).

The model is affine in the input size (rows x columns): ``peak = base + slope x size``, fitted
with Theil-Sen (median of pairwise slopes, median intercept), so one odd run does not move it.
Affine rather than log-log: every run pays a fixed base (interpreter, imported libraries, ~450 MB
here) on top of its data, which bends a log-log line and makes it under-predict large inputs.

- two or more distinct sizes: the Theil-Sen fit (slope and base clamped at >= 0);
- one size only, or a run without a declared size: the largest peak observed, scaled up by the
  size ratio for a larger input (never down: the base does not shrink);
- OOM-killed runs are lower bounds (their peak was at least their limit): every prediction at an
  input at least that large is raised to above the limit, so an under-prediction is not repeated.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median


@dataclass(frozen=True)
class Sample:
    """One past run: its input size (None when unknown), its peak bytes, and whether that peak is
    only a lower bound (the run was OOM-killed at that limit)."""

    size: float | None
    peak: int
    lower_bound: bool = False


@dataclass(frozen=True)
class Prediction:
    """Predicted peak bytes and how it was found (``n`` runs, ``fit``); ``firm`` is False for the
    one-size ratio guess (it also scales the base, so it over-predicts: never a reason to refuse)."""

    peak: int
    n: int
    fit: str
    firm: bool = True

    @property
    def basis(self) -> str:
        return f"{self.n} past run(s), {self.fit}"


def theil_sen(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(intercept, slope) of the Theil-Sen line through ``points`` (>= 2 distinct x)."""
    slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points)
              for x2, y2 in points[i + 1:] if x2 != x1]
    slope = max(0.0, median(slopes))
    intercept = max(0.0, median(y - slope * x for x, y in points))
    return intercept, slope


def _fitted(done: list[Sample], size: float | None) -> tuple[float, str, bool]:
    """The prediction from successful runs alone (their count is ``len(done)``)."""
    sized = [(s.size, float(s.peak)) for s in done if s.size is not None]
    largest = max(s.peak for s in done)
    if size is None or not sized:
        return float(largest), "max observed peak (no input size)", True
    if len({x for x, _ in sized}) >= 2:
        intercept, slope = theil_sen(sized)
        return (intercept + slope * size,
                f"theil-sen peak = {intercept / 2**20:.0f} MiB + {slope:.3g} B x size", True)
    ref_size, ref_peak = max(sized, key=lambda p: p[1])
    ratio = max(1.0, size / ref_size) if ref_size > 0 else 1.0
    return ref_peak * ratio, f"max observed x size ratio {ratio:.2f}", ratio == 1.0


def predict_peak(samples: list[Sample], size: float | None) -> Prediction | None:
    """Predicted peak bytes for an input of ``size`` (None when there is no history)."""
    done = [s for s in samples if not s.lower_bound]
    bounds = [s for s in samples if s.lower_bound and
              (size is None or s.size is None or s.size <= size)]
    if not done and not bounds:
        return None
    peak, fit, firm = _fitted(done, size) if done else (0.0, "no successful run", True)
    floor = max((b.peak for b in bounds), default=0)
    if floor and floor >= peak:
        peak, fit, firm = floor * 1.01, f"{fit}; raised above an OOM-killed run's limit", True
    return Prediction(int(peak), len(samples), fit, firm)
