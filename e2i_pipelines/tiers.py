"""Resource tiers: the one definition every other part of e2i imports.

An asset declares its tier with ``**tier_kwargs(Tier.HEAVY)`` in ``@asset(...)``; that sets
``op_tags={"e2i/tier": ...}`` (reaches the step and so the execution plan), a ``pool`` for
medium/heavy work (run-granularity concurrency), and a definition tag + kind so the UI shows it.
The launcher, the scaler and the API read tiers back with :func:`tier_of_tags`/:func:`max_tier`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

TIER_TAG = "e2i/tier"
"""Op tag (and run tag) holding a tier name."""


class UnknownTierError(ValueError):
    """A tier name that is not light/medium/heavy."""


class Tier(StrEnum):
    """Resource tier of an asset or a run, ordered light < medium < heavy."""

    LIGHT = "light"
    MEDIUM = "medium"
    HEAVY = "heavy"

    @property
    def rank(self) -> int:
        return _ORDER.index(self)

    def next_up(self) -> Tier | None:
        """The next larger tier, or None for heavy."""
        return _ORDER[self.rank + 1] if self.rank + 1 < len(_ORDER) else None

    @property
    def pool(self) -> str | None:
        """Concurrency pool for this tier (None: light work is not pooled)."""
        return None if self is Tier.LIGHT else f"e2i-{self.value}"


_ORDER = [Tier.LIGHT, Tier.MEDIUM, Tier.HEAVY]
TIER_NAMES = tuple(t.value for t in _ORDER)
HEAVY_POOL = "e2i-heavy"


def parse_tier(value: str | Tier) -> Tier:
    """Return the Tier for ``value`` or raise UnknownTierError naming the allowed values."""
    if isinstance(value, Tier):
        return value
    try:
        return Tier(str(value).strip().lower())
    except ValueError:
        raise UnknownTierError(
            f"unknown e2i tier {value!r}: expected one of {', '.join(TIER_NAMES)}"
        ) from None


def max_tier(tiers: Iterable[str | Tier], default: Tier = Tier.LIGHT) -> Tier:
    """Largest tier among ``tiers`` (``default`` when empty). Unknown names raise."""
    found = [parse_tier(t) for t in tiers]
    return max(found, key=lambda t: t.rank) if found else default


def tier_of_tags(tags: Mapping[str, Any] | None) -> Tier | None:
    """Tier named by an ``e2i/tier`` tag in ``tags`` (None when absent)."""
    if not tags or TIER_TAG not in tags:
        return None
    return parse_tier(tags[TIER_TAG])


def tier_kwargs(tier: Tier) -> dict[str, Any]:
    """Keyword arguments for ``@asset``/``@multi_asset``/``@asset_check`` declaring ``tier``."""
    kwargs: dict[str, Any] = {
        "op_tags": {TIER_TAG: tier.value},
    }
    if tier.pool:
        kwargs["pool"] = tier.pool
    return kwargs


def asset_tier_kwargs(tier: Tier) -> dict[str, Any]:
    """``tier_kwargs`` plus a definition tag and kind so the tier shows in the UI."""
    return {**tier_kwargs(tier), "tags": {TIER_TAG: tier.value}, "kinds": {f"tier-{tier.value}"}}


@dataclass(frozen=True)
class TierProfile:
    """Container budget of one tier (Docker units: cpus float, memory strings like '8g')."""

    cpus: float
    memory: str
    memswap: str
    pids: int
    shm: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_PROFILES: dict[Tier, TierProfile] = {
    Tier.LIGHT: TierProfile(cpus=2, memory="2g", memswap="2g", pids=512, shm="256m"),
    Tier.MEDIUM: TierProfile(cpus=4, memory="8g", memswap="8g", pids=1024, shm="1g"),
    Tier.HEAVY: TierProfile(cpus=16, memory="32g", memswap="32g", pids=4096, shm="4g"),
}
"""Production design sizes; deployments override them in dagster.yaml."""

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_bytes(value: str | int) -> int:
    """Docker-style size ('512m', '2g', 1024) to bytes; raises ValueError naming the value."""
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text.endswith("b") and len(text) > 1 and text[-2] in _UNITS:
        text = text[:-1]  # "512mb" -> "512m"
    number, unit = text, ""
    if text and text[-1] in _UNITS:
        number, unit = text[:-1], text[-1]
    try:
        amount = float(number)
    except ValueError:
        raise ValueError(f"cannot read size {value!r}: use e.g. 512m, 2g") from None
    if amount < 0:
        raise ValueError(f"size {value!r} is negative")
    return int(amount * _UNITS[unit])


def asset_tiers(defs: Any) -> dict[str, Tier]:
    """Tier of every asset in a ``dg.Definitions`` (from its step's op tag), by asset key.

    Raises UnknownTierError for a misspelt tier and ValueError for an asset without one.
    """
    graph = defs.resolve_asset_graph()
    tiers: dict[str, Tier] = {}
    for key in graph.get_all_asset_keys():
        assets_def = graph.get(key).assets_def
        if not assets_def.is_executable:
            continue
        tier = tier_of_tags(assets_def.op.tags)
        if tier is None:
            raise ValueError(f"asset {key.to_user_string()!r} has no {TIER_TAG} op tag")
        tiers[key.to_user_string()] = tier
    return tiers


RAY_FANOUT_RESOURCE = "e2i-fanout"
"""Ray custom resource a heavy node offers per concurrent fan-out task (``fan_out: true``)."""


def ray_resource(tier: str | Tier) -> str:
    """Ray custom resource naming a tier (``e2i-heavy``): a node offers it, a run requests 1."""
    return f"e2i-{parse_tier(tier).value}"
