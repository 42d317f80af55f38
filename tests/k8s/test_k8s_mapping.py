"""Tier -> ``dagster-k8s/config``: resources from the tier profiles, thread env, and a config that
dagster-k8s itself accepts and turns into Kubernetes objects."""

from __future__ import annotations

import json

import pytest

from e2i_pipelines.core.budget import THREAD_ENV_VARS
from e2i_pipelines.launcher.k8s import (
    K8S_CONFIG_TAG,
    byte_quantity,
    cpu_quantity,
    k8s_config,
    k8s_run_tags,
    unmapped_limits,
)
from e2i_pipelines.tiers import DEFAULT_PROFILES, Tier, TierProfile, UnknownTierError

SMALL = {"light": {"cpus": 0.5, "memory": "512m", "memswap": "512m", "pids": 128, "shm": "64m"},
         "heavy": {"cpus": 2, "memory": "1g", "memswap": "2g"}}


def env_of(config: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in config["container_config"]["env"]}


@pytest.mark.parametrize(("cpus", "expected"), [(2, "2"), (16.0, "16"), (0.5, "500m"), (1.25, "1250m")])
def test_cpu_quantity(cpus: float, expected: str) -> None:
    assert cpu_quantity(cpus) == expected


@pytest.mark.parametrize(("size", "expected"), [("2g", "2Gi"), ("512m", "512Mi"), ("1.5g", "1536Mi"),
                                                ("100k", "100Ki"), (1000, "1000"), ("32g", "32Gi")])
def test_byte_quantity(size: str | int, expected: str) -> None:
    assert byte_quantity(size) == expected


@pytest.mark.parametrize("bad", [0, -1, 0.0001])
def test_cpu_quantity_rejects_nonpositive_or_too_small(bad: float) -> None:
    with pytest.raises(ValueError, match="CPU budget"):
        cpu_quantity(bad)


@pytest.mark.parametrize("tier", list(Tier))
def test_default_profiles_map_to_guaranteed_resources(tier: Tier) -> None:
    profile = DEFAULT_PROFILES[tier]
    config = k8s_config(tier)
    resources = config["container_config"]["resources"]
    assert resources["requests"] == resources["limits"]
    assert resources["limits"] == {"cpu": cpu_quantity(profile.cpus), "memory": byte_quantity(profile.memory)}
    env = env_of(config)
    threads = str(int(profile.cpus))
    assert {name: env[name] for name in THREAD_ENV_VARS} == dict.fromkeys(THREAD_ENV_VARS, threads)
    assert env["E2I_N_JOBS"] == threads and env["E2I_TIER"] == tier.value
    shm = config["pod_spec_config"]["volumes"][0]
    assert shm["empty_dir"] == {"medium": "Memory", "size_limit": byte_quantity(profile.shm)}
    assert config["container_config"]["volume_mounts"] == [{"name": shm["name"], "mount_path": "/dev/shm"}]
    assert config["pod_template_spec_metadata"]["labels"] == {"e2i/tier": tier.value}


def test_production_heavy_is_16_cpu_32_gib() -> None:
    limits = k8s_config("heavy")["container_config"]["resources"]["limits"]
    assert limits == {"cpu": "16", "memory": "32Gi"}


def test_deployment_profiles_override_defaults_like_the_launcher_config() -> None:
    light = k8s_config("light", profiles=SMALL)
    assert light["container_config"]["resources"]["limits"] == {"cpu": "500m", "memory": "512Mi"}
    assert env_of(light)["OMP_NUM_THREADS"] == "1"  # half a CPU still gets one thread
    heavy = k8s_config("HEAVY", profiles=SMALL)  # partial profile: shm keeps the default
    assert heavy["container_config"]["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
    assert heavy["pod_spec_config"]["volumes"][0]["empty_dir"]["size_limit"] == "4Gi"
    medium = k8s_config(Tier.MEDIUM, profiles={Tier.MEDIUM: TierProfile(3, "6g", "6g", 100, "1g")})
    assert medium["container_config"]["resources"]["limits"] == {"cpu": "3", "memory": "6Gi"}


def test_ephemeral_storage_and_node_selector() -> None:
    config = k8s_config("heavy", ephemeral_storage="100g", node_selector={"pool": "e2i-heavy"})
    resources = config["container_config"]["resources"]
    assert resources["requests"]["ephemeral-storage"] == resources["limits"]["ephemeral-storage"] == "100Gi"
    assert config["pod_spec_config"]["node_selector"] == {"pool": "e2i-heavy"}


def test_bad_input_is_named() -> None:
    with pytest.raises(UnknownTierError, match="'huge'"):
        k8s_config("huge")
    with pytest.raises(ValueError, match="memory"):
        k8s_config("light", profiles={"light": {"memory": "lots"}})
    with pytest.raises(ValueError, match="unknown field"):
        k8s_config("light", profiles={"light": {"gpus": 1}})


def test_run_tags_are_json_of_the_config() -> None:
    tags = k8s_run_tags("medium", profiles=SMALL)
    assert list(tags) == [K8S_CONFIG_TAG]
    assert json.loads(tags[K8S_CONFIG_TAG]) == k8s_config("medium", profiles=SMALL)


def test_unmapped_limits_are_reported() -> None:
    notes = unmapped_limits("heavy", profiles=SMALL)
    assert any("pids=4096" in n for n in notes)
    assert any("memswap=2g" in n for n in notes)
    assert not any("memswap" in n for n in unmapped_limits("light"))


@pytest.mark.parametrize("tier", list(Tier))
def test_dagster_k8s_accepts_the_tag_and_builds_the_pod(tier: Tier) -> None:
    """The run tag parsed by dagster-k8s and turned into real Kubernetes models."""
    from dagster_k8s.job import get_user_defined_k8s_config
    from dagster_k8s.models import k8s_model_from_dict
    from kubernetes.client import V1Container, V1PodSpec

    user_config = get_user_defined_k8s_config(k8s_run_tags(tier, ephemeral_storage="20g"))
    container = k8s_model_from_dict(V1Container, {"name": "run", **user_config.container_config})
    assert container.resources.limits["memory"] == byte_quantity(DEFAULT_PROFILES[tier].memory)
    assert container.resources.requests["ephemeral-storage"] == "20Gi"
    assert container.volume_mounts[0].mount_path == "/dev/shm"
    pod = k8s_model_from_dict(
        V1PodSpec, {"containers": [{"name": "run", **user_config.container_config}], **user_config.pod_spec_config})
    assert pod.volumes[0].empty_dir.medium == "Memory"
