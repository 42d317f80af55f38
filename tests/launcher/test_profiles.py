"""Tier profile parsing and validation from launcher config (no Docker)."""

import pytest

from e2i_pipelines.launcher.profiles import (
    TierProfileError,
    container_limits,
    describe,
    parse_profiles,
)
from e2i_pipelines.tiers import DEFAULT_PROFILES, Tier, UnknownTierError


def test_no_config_gives_production_defaults():
    profiles = parse_profiles(None)
    assert profiles[Tier.LIGHT].cpus == 2 and profiles[Tier.LIGHT].memory == "2g"
    assert profiles[Tier.MEDIUM].cpus == 4 and profiles[Tier.MEDIUM].memory == "8g"
    assert profiles[Tier.HEAVY].cpus == 16 and profiles[Tier.HEAVY].memory == "32g"


def test_partial_override_keeps_other_fields():
    profiles = parse_profiles({"light": {"memory": "256m", "memswap": "256m"}, "HEAVY": {"cpus": 2}})
    assert profiles[Tier.LIGHT].memory == "256m"
    assert profiles[Tier.LIGHT].pids == DEFAULT_PROFILES[Tier.LIGHT].pids
    assert profiles[Tier.HEAVY].cpus == 2.0
    assert profiles[Tier.MEDIUM] == DEFAULT_PROFILES[Tier.MEDIUM]


def test_unknown_tier_name_is_rejected():
    with pytest.raises(UnknownTierError, match="'huge'.*light, medium, heavy"):
        parse_profiles({"huge": {"cpus": 64}})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"memory": "lots"}, "memory: cannot read size 'lots'"),
        ({"memory": "1m"}, "below Docker's 6m minimum"),
        ({"memory": "1g", "memswap": "512m"}, "memswap '512m' is smaller than memory '1g'"),
        ({"cpus": 0}, "cpus must be > 0"),
        ({"cpus": "two"}, "cpus 'two' is not a number"),
        ({"pids": 0}, "pids must be a positive integer"),
        ({"shm": "-1m"}, "shm: size '-1m' is negative"),
        ({"ram": "1g"}, r"unknown field\(s\) \['ram'\]"),
    ],
)
def test_bad_profile_fields_name_the_problem(fields, message):
    with pytest.raises(TierProfileError, match=message):
        parse_profiles({"light": {"memory": "1g", "memswap": "1g", **fields}})


def test_container_limits_in_docker_units_and_cpu_cap():
    profile = parse_profiles({"heavy": {"cpus": 16, "memory": "1g", "memswap": "1g", "pids": 300, "shm": "64m"}})[Tier.HEAVY]
    limits = container_limits(profile, engine_cpus=2)
    assert limits == {
        "mem_limit": 1024**3, "memswap_limit": 1024**3, "nano_cpus": 2_000_000_000,
        "pids_limit": 300, "shm_size": 64 * 1024**2,
    }
    assert container_limits(profile, engine_cpus=None)["nano_cpus"] == 16_000_000_000
    assert describe(profile, 2).startswith("cpus=2 (of 16, engine has 2) memory=1g")
