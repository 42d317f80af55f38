"""Kubernetes mapping of the tiers: tier -> ``dagster-k8s/config`` tag for dagster-k8s.

The same :class:`~e2i_pipelines.tiers.TierProfile` that sizes a Docker run container becomes the
run pod's container resources (requests = limits, so pods get Guaranteed QoS and the scheduler
only places a run where its whole budget fits), ``/dev/shm`` as a memory-backed ``emptyDir`` of
the tier's ``shm`` size, and the same thread-count environment the Docker launcher sets
(:func:`e2i_pipelines.core.budget.thread_env` plus ``E2I_TIER``). What Kubernetes has no pod
field for is said, not dropped silently: ``memswap`` above ``memory`` (nodes run without swap)
and ``pids`` (a kubelet-wide ``podPidsLimit``) are reported by :func:`unmapped_limits`.

Used by ``K8sRunLauncher`` (run tag) and ``k8s_job_executor`` (op tag); see docs/deploy.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from e2i_pipelines.core.budget import thread_env
from e2i_pipelines.launcher.profiles import parse_profiles
from e2i_pipelines.launcher.tiered import TIER_ENV
from e2i_pipelines.tiers import Tier, TierProfile, parse_bytes, parse_tier

K8S_CONFIG_TAG = "dagster-k8s/config"
SHM_VOLUME = "e2i-shm"
_BINARY_UNITS = (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024))


def cpu_quantity(cpus: float) -> str:
    """Kubernetes CPU quantity: whole cores as ``"2"``, fractions in millicores (``"500m"``)."""
    if cpus <= 0:
        raise ValueError(f"CPU budget must be > 0, got {cpus!r}")
    millis = round(cpus * 1000)
    if millis == 0:
        raise ValueError(f"CPU budget {cpus!r} is below Kubernetes' 1m resolution")
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def byte_quantity(size: str | int) -> str:
    """Kubernetes memory/storage quantity from a Docker-style size (``"2g"`` -> ``"2Gi"``)."""
    amount = parse_bytes(size)
    if amount <= 0:
        raise ValueError(f"size {size!r} must be > 0")
    for suffix, unit in _BINARY_UNITS:
        if amount % unit == 0:
            return f"{amount // unit}{suffix}"
    return str(amount)


def _profiles(profiles: Mapping[Tier, TierProfile] | Mapping[str, Any] | None) -> dict[Tier, TierProfile]:
    """Validated profiles: defaults, launcher-config style dicts, or ready TierProfiles."""
    if profiles and all(isinstance(p, TierProfile) for p in profiles.values()):
        return {parse_tier(t): p for t, p in profiles.items()}
    return parse_profiles(profiles)


def k8s_config(
    tier: str | Tier,
    profiles: Mapping[Tier, TierProfile] | Mapping[str, Any] | None = None,
    ephemeral_storage: str | None = None,
    node_selector: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``dagster-k8s/config`` dict for a run (or step) of ``tier``.

    ``profiles``: the deployment's tier profiles (the launcher's ``tiers:`` config, or parsed
    TierProfiles); production defaults when omitted. ``ephemeral_storage`` (e.g. ``"20g"``)
    requests and limits scratch disk; ``node_selector`` pins the tier to a node pool.
    """
    resolved = parse_tier(tier)
    profile = _profiles(profiles)[resolved]
    resources = {"cpu": cpu_quantity(profile.cpus), "memory": byte_quantity(profile.memory)}
    if ephemeral_storage is not None:
        resources["ephemeral-storage"] = byte_quantity(ephemeral_storage)
    env = {**thread_env(profile.cpus), TIER_ENV: resolved.value}
    pod_spec: dict[str, Any] = {
        "volumes": [{"name": SHM_VOLUME,
                     "empty_dir": {"medium": "Memory", "size_limit": byte_quantity(profile.shm)}}],
    }
    if node_selector:
        pod_spec["node_selector"] = dict(node_selector)
    return {
        "container_config": {
            "resources": {"requests": dict(resources), "limits": dict(resources)},
            "env": [{"name": name, "value": value} for name, value in sorted(env.items())],
            "volume_mounts": [{"name": SHM_VOLUME, "mount_path": "/dev/shm"}],
        },
        "pod_spec_config": pod_spec,
        "pod_template_spec_metadata": {"labels": {"e2i/tier": resolved.value}},
    }


def k8s_run_tags(tier: str | Tier, **kwargs: Any) -> dict[str, str]:
    """Run tags carrying :func:`k8s_config` (JSON, as run tags are strings)."""
    return {K8S_CONFIG_TAG: json.dumps(k8s_config(tier, **kwargs), sort_keys=True)}


def unmapped_limits(
    tier: str | Tier, profiles: Mapping[Tier, TierProfile] | Mapping[str, Any] | None = None
) -> list[str]:
    """Docker limits of ``tier`` that a pod spec cannot express, one sentence each."""
    profile = _profiles(profiles)[parse_tier(tier)]
    notes = [f"pids={profile.pids}: set the kubelet's podPidsLimit on the node pool"]
    if parse_bytes(profile.memswap) > parse_bytes(profile.memory):
        notes.append(f"memswap={profile.memswap} > memory={profile.memory}: Kubernetes nodes run "
                     "without swap; the pod gets memory only")
    return notes
