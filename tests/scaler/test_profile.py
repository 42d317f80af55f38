"""The heavy profile: tiered launcher's, default, or config override."""

import pytest

from e2i_pipelines.scaler.config import ResourceOverride
from e2i_pipelines.scaler.profile import resolve_heavy_profile
from e2i_pipelines.tiers import DEFAULT_PROFILES, Tier, TierProfile, parse_bytes


class _Tiered:  # like TieredDockerRunLauncher.tier_profiles
    tier_profiles = {Tier.HEAVY: TierProfile(cpus=6, memory="12g", memswap="12g", pids=10, shm="1g")}


class _TieredByName:
    profiles = {"heavy": {"cpus": 3, "memory": "5g"}}


def test_default_profile_without_tiered_launcher():
    p = resolve_heavy_profile(object(), ResourceOverride())
    heavy = DEFAULT_PROFILES[Tier.HEAVY]
    assert (p.cpus, p.memory_bytes, p.source) == (heavy.cpus, parse_bytes(heavy.memory), "default")


def test_launcher_profile_is_used():
    p = resolve_heavy_profile(_Tiered(), ResourceOverride())
    assert (p.cpus, p.memory_bytes, p.source) == (6, 12 * 1024**3, "launcher")
    p = resolve_heavy_profile(_TieredByName(), ResourceOverride())
    assert (p.cpus, p.memory_bytes) == (3, 5 * 1024**3)


def test_config_override_wins_per_field():
    p = resolve_heavy_profile(_Tiered(), ResourceOverride(memory_bytes=1024))
    assert (p.cpus, p.memory_bytes, p.source) == (6, 1024, "config over launcher")


def test_real_tiered_docker_launcher_profile():
    from e2i_pipelines.launcher.tiered_docker_run_launcher import TieredDockerRunLauncher
    from e2i_pipelines.scaler.capacity import launcher_uses_docker

    launcher = TieredDockerRunLauncher(image="e2i:local", tiers={"heavy": {"cpus": 3, "memory": "6g"}})
    p = resolve_heavy_profile(launcher, ResourceOverride())
    assert (p.cpus, p.memory_bytes, p.source) == (3, 6 * 1024**3, "launcher")
    assert launcher_uses_docker(launcher)


def test_non_positive_launcher_profile_is_rejected():
    class _Broken:
        tier_profiles = {"heavy": {"cpus": 0, "memory": "1g"}}

    with pytest.raises(ValueError, match="positive cpus and memory"):
        resolve_heavy_profile(_Broken(), ResourceOverride())
