"""A run's cost: its tier's hourly budget price x its wall time, in integer micro-units.

Money is held as integer micro-units (1e-6 of the currency) and written as a fixed-point text
tag, so sums are exact. ``e2i/cost`` is the amount, ``e2i/cost_basis`` says how it was made
(tier, budget, price, wall time), ``e2i/cost_currency`` the currency.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

from e2i_pipelines.core.prices import PriceTable
from e2i_pipelines.launcher.promotion import FAILURE_TAG
from e2i_pipelines.tiers import TIER_NAMES, TIER_TAG, Tier, TierProfile

COST_TAG = "e2i/cost"
COST_BASIS_TAG = "e2i/cost_basis"
COST_CURRENCY_TAG = "e2i/cost_currency"
MICROS = Decimal(1_000_000)
_MILLISECOND = Decimal("0.001")


@dataclass(frozen=True)
class RunCost:
    """Cost of one run: ``micros`` of ``currency`` and the basis it was computed from."""

    micros: int
    currency: str
    basis: str

    @property
    def amount(self) -> Decimal:
        return Decimal(self.micros) / MICROS

    def tags(self) -> dict[str, str]:
        return {COST_TAG: format_micros(self.micros), COST_BASIS_TAG: self.basis,
                COST_CURRENCY_TAG: self.currency}


def format_micros(micros: int) -> str:
    """Integer micro-units as fixed-point text: 1234567 -> '1.234567'."""
    return f"{Decimal(micros) / MICROS:.6f}"


def parse_micros(text: str) -> int:
    """Fixed-point text (an ``e2i/cost`` tag) to integer micro-units; ValueError when unreadable."""
    try:
        value = Decimal(text.strip()) * MICROS
    except Exception:  # noqa: BLE001 - decimal raises InvalidOperation (an ArithmeticError)
        raise ValueError(f"cost {text!r} is not a number") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise ValueError(f"cost {text!r} has more than 6 decimals or is not finite")
    return int(value)


def wall_seconds(start: float | None, end: float | None) -> Decimal | None:
    """Wall time in seconds rounded to the millisecond; None when the run never started."""
    if start is None or end is None:
        return None
    return max(Decimal(str(end - start)).quantize(_MILLISECOND, ROUND_HALF_UP), Decimal(0))


def run_cost(tier: Tier, profile: TierProfile, prices: PriceTable,
             start: float | None, end: float | None) -> RunCost:
    """Cost of a run of ``tier`` (budget ``profile``) that ran from ``start`` to ``end``."""
    price = prices.price(tier)
    seconds = wall_seconds(start, end)
    if seconds is None:
        return RunCost(0, prices.currency, f"{tier.value}: never started, 0 s")
    amount = price.hourly(profile) * seconds / Decimal(3600)
    micros = int((amount * MICROS).to_integral_value(ROUND_HALF_UP))
    budget = f"cpus={profile.cpus:g} memory={profile.memory}"
    return RunCost(micros, prices.currency,
                   f"{tier.value} budget {budget}: {price.describe(profile, prices.currency)}"
                   f" x {seconds} s")


@dataclass(frozen=True)
class CostedRun:
    """The cost-relevant facts of one finished run (from its tags and end time)."""

    run_id: str
    job: str
    tier: str
    ended_at: float
    micros: int
    oom: bool

    @classmethod
    def from_tags(cls, run_id: str, job: str, tags: Mapping[str, str], ended_at: float) -> CostedRun | None:
        """None when the run has no ``e2i/cost`` tag (not costed yet); ValueError when the tag is
        not a cost."""
        if COST_TAG not in tags:
            return None
        tier = tags.get(TIER_TAG, "unknown")
        return cls(run_id=run_id, job=job, tier=tier if tier in TIER_NAMES else "unknown",
                   ended_at=ended_at, micros=parse_micros(tags[COST_TAG]),
                   oom=tags.get(FAILURE_TAG) == "oom")

    def key(self, group_by: str) -> str:
        if group_by == "job":
            return self.job
        if group_by == "tier":
            return self.tier
        if group_by == "day":
            return datetime.fromtimestamp(self.ended_at, UTC).date().isoformat()
        raise ValueError(f"group_by {group_by!r}: expected job, tier or day")


GROUP_BY = ("job", "tier", "day")


@dataclass
class CostGroup:
    """Summed cost of the runs in one group (micro-units), and what OOM-killed runs cost."""

    key: str
    runs: int = 0
    micros: int = 0
    oom_runs: int = 0
    oom_micros: int = 0

    def add(self, run: CostedRun) -> None:
        self.runs += 1
        self.micros += run.micros
        if run.oom:
            self.oom_runs += 1
            self.oom_micros += run.micros


def total_of(groups: Iterable[CostGroup], key: str = "total") -> CostGroup:
    """One group summing ``groups``."""
    total = CostGroup(key)
    for group in groups:
        total.runs += group.runs
        total.micros += group.micros
        total.oom_runs += group.oom_runs
        total.oom_micros += group.oom_micros
    return total


def sum_costs(runs: Iterable[CostedRun], group_by: str) -> list[CostGroup]:
    """Exact sums per ``group_by`` key (job, tier or day of the run's end, UTC), sorted by key."""
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by {group_by!r}: expected one of {', '.join(GROUP_BY)}")
    groups: dict[str, CostGroup] = {}
    for run in runs:
        key = run.key(group_by)
        groups.setdefault(key, CostGroup(key)).add(run)
    return [groups[key] for key in sorted(groups)]
