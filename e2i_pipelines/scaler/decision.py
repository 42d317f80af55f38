"""The scaler's decision: how many heavy runs may be in progress at once (pure, no I/O)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Decision:
    """One scaler decision with every input it was made from."""

    min_heavy_runs: int
    max_heavy_runs: int
    queued: int
    running: int
    capacity_slots: int | None
    """Heavy runs the host can hold; None when not measured (no demand: it cannot matter)."""
    current_limit: int | None
    """Pool limit before this decision; None when the pool has no limit yet."""
    demand: int
    allowed: int
    bound_by: str
    """Which input set ``allowed``: demand, capacity, min or max."""
    changed: bool
    """True when the pool limit must be written (``allowed`` differs from ``current_limit``)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line saying what was decided and why."""
        action = "set" if self.changed else "unchanged"
        capacity = "not measured (no demand)" if self.capacity_slots is None else (
            f"{self.capacity_slots} slot(s)"
        )
        return (
            f"heavy cap {self.allowed} ({action}, was {self.current_limit}): bound by "
            f"{self.bound_by}; demand {self.demand} = {self.queued} queued + {self.running} "
            f"running; capacity {capacity}; range {self.min_heavy_runs}..{self.max_heavy_runs}"
        )


def decide(
    *,
    min_heavy_runs: int,
    max_heavy_runs: int,
    queued: int,
    running: int,
    capacity_slots: int | None,
    current_limit: int | None,
) -> Decision:
    """allowed = clamp(min, max) of min(capacity_slots, queued + running)."""
    for name, value in (("min_heavy_runs", min_heavy_runs), ("max_heavy_runs", max_heavy_runs),
                        ("queued", queued), ("running", running)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if max_heavy_runs < min_heavy_runs:
        raise ValueError(f"max_heavy_runs ({max_heavy_runs}) < min_heavy_runs ({min_heavy_runs})")
    if capacity_slots is not None and capacity_slots < 0:
        raise ValueError(f"capacity_slots must be >= 0, got {capacity_slots}")

    demand = queued + running
    allowed, bound_by = demand, "demand"
    if capacity_slots is not None and capacity_slots < demand:
        allowed, bound_by = capacity_slots, "capacity"
    if allowed < min_heavy_runs:
        allowed, bound_by = min_heavy_runs, "min"
    elif allowed > max_heavy_runs:
        allowed, bound_by = max_heavy_runs, "max"
    return Decision(
        min_heavy_runs=min_heavy_runs,
        max_heavy_runs=max_heavy_runs,
        queued=queued,
        running=running,
        capacity_slots=capacity_slots,
        current_limit=current_limit,
        demand=demand,
        allowed=allowed,
        bound_by=bound_by,
        changed=allowed != current_limit,
    )
