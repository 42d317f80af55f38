"""Tier profiles from the launcher config, validated, and their Docker container limits.

Launcher config (dagster.yaml ``run_launcher.config.tiers``) maps tier names to partial
profiles; fields not given keep the production defaults from :data:`e2i_pipelines.tiers.DEFAULT_PROFILES`::

    tiers:
      light:  {cpus: 1, memory: 256m, memswap: 256m, pids: 256, shm: 64m}
      medium: {memory: 512m}
"""

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from e2i_pipelines.tiers import DEFAULT_PROFILES, Tier, TierProfile, parse_bytes, parse_tier

PROFILE_FIELDS = ("cpus", "memory", "memswap", "pids", "shm")


class TierProfileError(ValueError):
    """A tier profile in the launcher config is malformed."""


def _validated(tier: Tier, profile: TierProfile) -> TierProfile:
    where = f"tier profile {tier.value!r}"
    try:
        cpus = float(profile.cpus)
    except (TypeError, ValueError):
        raise TierProfileError(f"{where}: cpus {profile.cpus!r} is not a number") from None
    if cpus <= 0:
        raise TierProfileError(f"{where}: cpus must be > 0, got {profile.cpus!r}")
    sizes = {}
    for name in ("memory", "memswap", "shm"):
        try:
            sizes[name] = parse_bytes(getattr(profile, name))
        except ValueError as exc:
            raise TierProfileError(f"{where}: {name}: {exc}") from None
        if sizes[name] <= 0:
            raise TierProfileError(f"{where}: {name} must be > 0")
    if sizes["memory"] < 6 * 1024**2:
        raise TierProfileError(f"{where}: memory {profile.memory!r} is below Docker's 6m minimum")
    if sizes["memswap"] < sizes["memory"]:
        raise TierProfileError(
            f"{where}: memswap {profile.memswap!r} is smaller than memory {profile.memory!r}"
            " (memswap is memory + swap; set it equal to memory for no swap)"
        )
    if isinstance(profile.pids, bool) or not isinstance(profile.pids, int) or profile.pids < 1:
        raise TierProfileError(f"{where}: pids must be a positive integer, got {profile.pids!r}")
    return replace(profile, cpus=cpus)


def parse_profiles(config: Mapping[str, Any] | None) -> dict[Tier, TierProfile]:
    """Tier profiles: defaults overridden by ``config`` (tier name -> partial profile)."""
    profiles = dict(DEFAULT_PROFILES)
    for name, fields in (config or {}).items():
        tier = parse_tier(name)
        if not isinstance(fields, Mapping):
            raise TierProfileError(f"tier profile {name!r} must be a mapping of {PROFILE_FIELDS}")
        unknown = sorted(set(fields) - set(PROFILE_FIELDS))
        if unknown:
            raise TierProfileError(
                f"tier profile {name!r}: unknown field(s) {unknown}; allowed: {list(PROFILE_FIELDS)}"
            )
        profiles[tier] = replace(profiles[tier], **dict(fields))
    return {tier: _validated(tier, profile) for tier, profile in profiles.items()}


def effective_cpus(profile: TierProfile, engine_cpus: int | None) -> float:
    """The profile's CPUs, capped at what the engine has (Docker rejects more than that)."""
    if engine_cpus and profile.cpus > engine_cpus:
        return float(engine_cpus)
    return float(profile.cpus)


def container_limits(profile: TierProfile, engine_cpus: int | None = None) -> dict[str, Any]:
    """docker-py ``containers.create`` kwargs enforcing ``profile``."""
    return {
        "mem_limit": parse_bytes(profile.memory),
        "memswap_limit": parse_bytes(profile.memswap),
        "nano_cpus": int(round(effective_cpus(profile, engine_cpus) * 1e9)),
        "pids_limit": profile.pids,
        "shm_size": parse_bytes(profile.shm),
    }


def describe(profile: TierProfile, engine_cpus: int | None = None) -> str:
    """One-line summary, e.g. ``cpus=2 memory=2g memswap=2g pids=512 shm=256m``."""
    cpus = effective_cpus(profile, engine_cpus)
    cpu_text = f"{cpus:g}" if cpus == profile.cpus else f"{cpus:g} (of {profile.cpus:g}, engine has {engine_cpus})"
    return (
        f"cpus={cpu_text} memory={profile.memory} memswap={profile.memswap} "
        f"pids={profile.pids} shm={profile.shm}"
    )
