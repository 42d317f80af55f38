"""Resource tiers: the one definition every other part of e2i imports.

An asset declares its tier with ``**tier_kwargs(Tier.HEAVY)`` in ``@asset(...)``; that sets
``op_tags={"e2i/tier": ...}`` (reaches the step and so the execution plan), a ``pool`` for
medium/heavy work (run-granularity concurrency), and a definition tag + kind so the UI shows it.
The launcher, the scaler and the API read tiers back with :func:`tier_of_tags`/:func:`max_tier`.

``Tier.AUTO`` (``tier_kwargs(Tier.AUTO, floor=..., ceiling=...)``, or the run tag ``e2i/tier=auto``)
lets the launcher pick the tier from the run history (:mod:`e2i_pipelines.launcher.sizing`);
everything else sees an auto step or run at its ceiling (:func:`tier_of_tags`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum, nonmember
from typing import Any

TIER_TAG = "e2i/tier"
"""Op tag (and run tag) holding a tier name."""
TIER_FLOOR_TAG = "e2i/tier_floor"
"""With ``e2i/tier=auto``: the smallest tier the launcher may choose (default light)."""
TIER_CEILING_TAG = "e2i/tier_ceiling"
"""With ``e2i/tier=auto``: the largest tier the launcher may choose (default heavy)."""


class UnknownTierError(ValueError):
    """A tier name that is not light/medium/heavy."""


class Tier(StrEnum):
    """Resource tier of an asset or a run, ordered light < medium < heavy.

    ``Tier.AUTO`` is the string ``"auto"``, not a member: it is no size (iterating ``Tier`` gives
    the three sizes); the launcher resolves it to one of them before launch.
    """

    LIGHT = "light"
    MEDIUM = "medium"
    HEAVY = "heavy"
    AUTO = nonmember("auto")

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
    """Return the Tier for ``value`` or raise UnknownTierError naming the allowed values
    (``auto`` too: it is read only through :func:`auto_bounds`/:func:`tier_of_tags`)."""
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


@dataclass(frozen=True)
class AutoBounds:
    """Where ``Tier.AUTO`` may land: ``floor`` <= chosen tier <= ``ceiling``."""

    floor: Tier
    ceiling: Tier


def is_auto(tags: Mapping[str, Any] | None) -> bool:
    """True when ``tags`` say ``e2i/tier=auto``."""
    return bool(tags) and str(tags.get(TIER_TAG, "")).strip().lower() == Tier.AUTO


def auto_bounds(tags: Mapping[str, Any] | None) -> AutoBounds | None:
    """Floor and ceiling of an auto step or run (None unless ``e2i/tier=auto``); a floor above
    the ceiling or an unknown name raises UnknownTierError naming the tag."""
    if not is_auto(tags):
        return None
    assert tags is not None
    bounds = []
    for key, default in ((TIER_FLOOR_TAG, Tier.LIGHT), (TIER_CEILING_TAG, Tier.HEAVY)):
        try:
            bounds.append(parse_tier(tags.get(key, default)))
        except UnknownTierError as exc:
            raise UnknownTierError(f"tag {key}: {exc}") from None
    floor, ceiling = bounds
    if floor.rank > ceiling.rank:
        raise UnknownTierError(
            f"tag {TIER_FLOOR_TAG}={floor.value} is above {TIER_CEILING_TAG}={ceiling.value}")
    return AutoBounds(floor, ceiling)


def tier_of_tags(tags: Mapping[str, Any] | None) -> Tier | None:
    """Tier named by an ``e2i/tier`` tag in ``tags`` (None when absent); an auto one counts as its
    ceiling (the most it may use), so limits and displays stay conservative."""
    if not tags or TIER_TAG not in tags:
        return None
    bounds = auto_bounds(tags)
    return bounds.ceiling if bounds else parse_tier(tags[TIER_TAG])


def tier_kwargs(tier: Tier | str, floor: Tier = Tier.LIGHT, ceiling: Tier = Tier.HEAVY) -> dict[str, Any]:
    """Keyword arguments for ``@asset``/``@multi_asset``/``@asset_check`` declaring ``tier``.

    ``floor`` and ``ceiling`` bound ``Tier.AUTO``; an auto step has no pool (its size is known
    only at launch), so the run queue and the heavy-run scaler do not count it as heavy.
    """
    if tier != Tier.AUTO:
        tier = parse_tier(tier)
        kwargs: dict[str, Any] = {"op_tags": {TIER_TAG: tier.value}}
        if tier.pool:
            kwargs["pool"] = tier.pool
        return kwargs
    tags = {TIER_TAG: Tier.AUTO, TIER_FLOOR_TAG: parse_tier(floor).value,
            TIER_CEILING_TAG: parse_tier(ceiling).value}
    auto_bounds(tags)  # a floor above the ceiling fails at definition time
    return {"op_tags": tags}


def asset_tier_kwargs(tier: Tier | str, floor: Tier = Tier.LIGHT, ceiling: Tier = Tier.HEAVY) -> dict[str, Any]:
    """``tier_kwargs`` plus a definition tag and kind so the tier shows in the UI."""
    name = Tier.AUTO if tier == Tier.AUTO else parse_tier(tier).value
    return {**tier_kwargs(tier, floor, ceiling), "tags": {TIER_TAG: name}, "kinds": {f"tier-{name}"}}


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
