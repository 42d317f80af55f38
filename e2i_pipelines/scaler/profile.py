"""What one heavy run needs: the launcher's heavy profile, the config override, or the default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from e2i_pipelines.scaler.config import ResourceOverride
from e2i_pipelines.tiers import DEFAULT_PROFILES, Tier, parse_bytes


@dataclass(frozen=True)
class HeavyProfile:
    """CPU and memory one heavy run holds, and where those numbers came from."""

    cpus: float
    memory_bytes: int
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "memory_bytes": self.memory_bytes, "source": self.source}


def launcher_heavy_profile(run_launcher: Any) -> Any | None:
    """The heavy profile of a tiered launcher (duck-typed ``.tier_profiles`` / ``.profiles``:
    tier -> profile with ``cpus`` and ``memory``), or None."""
    for attr in ("tier_profiles", "profiles"):
        profiles = getattr(run_launcher, attr, None)
        if isinstance(profiles, Mapping):
            for key in (Tier.HEAVY, Tier.HEAVY.value):
                if key in profiles:
                    return profiles[key]
    return None


def _field(profile: Any, name: str) -> Any:
    return profile[name] if isinstance(profile, Mapping) else getattr(profile, name)


def resolve_heavy_profile(run_launcher: Any, override: ResourceOverride) -> HeavyProfile:
    """Heavy profile from the launcher (else DEFAULT_PROFILES), with config overrides on top."""
    base = launcher_heavy_profile(run_launcher)
    source = "launcher"
    if base is None:
        base, source = DEFAULT_PROFILES[Tier.HEAVY], "default"
    cpus = float(_field(base, "cpus"))
    memory = parse_bytes(_field(base, "memory"))
    if override.cpus is not None or override.memory_bytes is not None:
        source = f"config over {source}"
    profile = HeavyProfile(
        cpus=override.cpus if override.cpus is not None else cpus,
        memory_bytes=override.memory_bytes if override.memory_bytes is not None else memory,
        source=source,
    )
    if profile.cpus <= 0 or profile.memory_bytes <= 0:
        raise ValueError(f"heavy profile ({source}) must have positive cpus and memory: {profile}")
    return profile
