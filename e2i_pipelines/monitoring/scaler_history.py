"""The heavy scaler's decisions as the instance stored them: latest one, and the cap over time.

The ``e2i_heavy_scaler`` sensor writes each decision as JSON in its cursor (so in every tick);
nothing here patches the daemon. ``idle_share`` is the share of heavy capacity allowed by the cap
that no heavy run used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.scheduler.instigation import InstigatorType

from e2i_pipelines.scaler import SCALER_SENSOR_NAME


def _decision(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        record = json.loads(cursor)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "decision" in record else None


def scaler_states(instance: dg.DagsterInstance) -> list[Any]:
    """Stored states of the scaler sensor (one per code location that defines it)."""
    return [state for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
            if state.instigator_name == SCALER_SENSOR_NAME]


def latest_decision(instance: dg.DagsterInstance) -> dict[str, Any] | None:
    """The scaler's last decision record (``ScalerEvaluation.record()``), None when none yet."""
    records = [_decision(getattr(state.instigator_data, "cursor", None))
               for state in scaler_states(instance)]
    records = [r for r in records if r]
    return max(records, key=lambda r: r.get("evaluated_at", 0)) if records else None


def cap_timeline(instance: dg.DagsterInstance, start: float, end: float) -> list[tuple[float, int]]:
    """(time, cap) points from the scaler's ticks in [start, end), with the cap in force at start."""
    points: list[tuple[float, int]] = []
    for state in scaler_states(instance):
        before = instance.get_ticks(state.instigator_origin_id, state.selector_id, before=float(start), limit=20)
        during = instance.get_ticks(state.instigator_origin_id, state.selector_id, after=float(start), before=float(end))
        earlier = [(start, r["decision"]["allowed"]) for r in
                   (_decision(t.cursor) for t in before) if r][:1]  # newest first
        points += earlier + [(t.timestamp, r["decision"]["allowed"]) for t in during
                             if (r := _decision(t.cursor))]
    return sorted(points)


@dataclass(frozen=True)
class IdleShare:
    """Heavy run-seconds the cap allowed, those used, and the idle share (None: cap was 0)."""

    cap_seconds: float
    busy_seconds: float

    @property
    def share(self) -> float | None:
        if self.cap_seconds <= 0:
            return None
        return max(0.0, 1.0 - self.busy_seconds / self.cap_seconds)


def idle_share(points: Sequence[tuple[float, int]], busy: Iterable[tuple[float, float]],
               start: float, end: float) -> IdleShare:
    """Idle share of the cap's capacity over [start, end): cap is a step function of ``points``
    (before the first point: 0), ``busy`` are heavy runs' (start, end) intervals."""
    cap_seconds = 0.0
    ordered = sorted(points)
    for i, (t, cap) in enumerate(ordered):
        t_next = ordered[i + 1][0] if i + 1 < len(ordered) else end
        lo, hi = max(t, start), min(t_next, end)
        if hi > lo:
            cap_seconds += cap * (hi - lo)
    busy_seconds = float(sum(max(0.0, min(e, end) - max(s, start)) for s, e in busy))
    return IdleShare(cap_seconds=cap_seconds, busy_seconds=busy_seconds)
