"""A run's cost: its tier's hourly budget price x its wall time, in integer micro-units.

Money is held as integer micro-units (1e-6 of the currency) and written as a fixed-point text
tag, so sums are exact. ``e2i/cost`` is the amount, ``e2i/cost_basis`` says how it was made
(tier, budget, price, wall time), ``e2i/cost_currency`` the currency.

**Waste** is what a run paid for and did not use: cost x (1 - memory utilisation) for memory and
cost x (1 - CPU utilisation) for CPU, from the utilisation tags the run worker measured
(:mod:`~e2i_pipelines.launcher.cgroup_usage`); only measured runs have waste.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

from e2i_pipelines.core.prices import PriceTable
from e2i_pipelines.launcher.cgroup_usage import (
    CPU_UTILISATION_TAG,
    MEMORY_UTILISATION_TAG,
    PEAK_MEMORY_TAG,
)
from e2i_pipelines.launcher.promotion import FAILURE_TAG
from e2i_pipelines.tiers import TIER_NAMES, TIER_TAG, Tier, TierProfile

COST_TAG = "e2i/cost"
COST_BASIS_TAG = "e2i/cost_basis"
COST_CURRENCY_TAG = "e2i/cost_currency"
MICROS = Decimal(1_000_000)
_MILLISECOND = Decimal("0.001")
LOW_CPU_UTILISATION = Decimal("0.25")
"""A job whose runs use less than this share of their CPUs (cost-weighted) is flagged."""


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


def parse_utilisation(text: str | None) -> Decimal | None:
    """A utilisation tag as a Decimal; None when absent or not a finite non-negative number."""
    try:
        value = Decimal((text or "").strip())
    except Exception:  # noqa: BLE001 - decimal raises InvalidOperation
        return None
    return value if value.is_finite() and value >= 0 else None


def _peak(text: str | None) -> int | None:
    value = parse_utilisation(text)
    return int(value) if value is not None else None


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
    memory_utilisation: Decimal | None = None
    cpu_utilisation: Decimal | None = None
    peak_bytes: int | None = None

    @property
    def measured(self) -> bool:
        return self.memory_utilisation is not None and self.cpu_utilisation is not None

    def waste(self, used: Decimal | None) -> int:
        """Micro-units of this run's cost not used at ``used`` utilisation (0 when unmeasured)."""
        if used is None:
            return 0
        unused = Decimal(1) - min(max(used, Decimal(0)), Decimal(1))
        return int((self.micros * unused).to_integral_value(ROUND_HALF_UP))

    @classmethod
    def from_tags(cls, run_id: str, job: str, tags: Mapping[str, str], ended_at: float) -> CostedRun | None:
        """None when the run has no ``e2i/cost`` tag (not costed yet); ValueError when the tag is
        not a cost."""
        if COST_TAG not in tags:
            return None
        tier = tags.get(TIER_TAG, "unknown")
        return cls(run_id=run_id, job=job, tier=tier if tier in TIER_NAMES else "unknown",
                   ended_at=ended_at, micros=parse_micros(tags[COST_TAG]),
                   oom=tags.get(FAILURE_TAG) == "oom",
                   memory_utilisation=parse_utilisation(tags.get(MEMORY_UTILISATION_TAG)),
                   cpu_utilisation=parse_utilisation(tags.get(CPU_UTILISATION_TAG)),
                   peak_bytes=_peak(tags.get(PEAK_MEMORY_TAG)))

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
    """Summed cost of the runs in one group (micro-units), what OOM-killed runs cost, and the
    memory and CPU waste of the measured runs."""

    key: str
    runs: int = 0
    micros: int = 0
    oom_runs: int = 0
    oom_micros: int = 0
    measured_runs: int = 0
    measured_micros: int = 0
    memory_waste_micros: int = 0
    cpu_waste_micros: int = 0

    def add(self, run: CostedRun) -> None:
        self.runs += 1
        self.micros += run.micros
        if run.oom:
            self.oom_runs += 1
            self.oom_micros += run.micros
        if run.measured:
            self.measured_runs += 1
            self.measured_micros += run.micros
            self.memory_waste_micros += run.waste(run.memory_utilisation)
            self.cpu_waste_micros += run.waste(run.cpu_utilisation)

    def merge(self, other: CostGroup) -> None:
        """Add ``other``'s sums to this group's."""
        for name in ("runs", "micros", "oom_runs", "oom_micros", "measured_runs", "measured_micros",
                     "memory_waste_micros", "cpu_waste_micros"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def waste_micros(self) -> int:
        """Memory plus CPU waste (what ranks the most wasteful jobs)."""
        return self.memory_waste_micros + self.cpu_waste_micros

    @property
    def cpu_utilisation(self) -> Decimal | None:
        """Cost-weighted CPU utilisation of the measured runs; None when none was measured."""
        if not self.measured_micros:
            return None
        return 1 - Decimal(self.cpu_waste_micros) / Decimal(self.measured_micros)

    @property
    def low_cpu(self) -> bool:
        """True when the measured runs used under :data:`LOW_CPU_UTILISATION` of their CPUs."""
        used = self.cpu_utilisation
        return used is not None and used < LOW_CPU_UTILISATION


def total_of(groups: Iterable[CostGroup], key: str = "total") -> CostGroup:
    """One group summing ``groups``."""
    total = CostGroup(key)
    for group in groups:
        total.merge(group)
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
