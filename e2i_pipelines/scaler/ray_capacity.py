"""Heavy-run capacity of a Ray cluster: how many heavy runs its alive nodes can hold at once.

Each node that offers the tier resource ``e2i-heavy`` holds as many heavy runs as its tier
resource, CPUs and memory allow together (a run asks for 1 ``e2i-heavy`` plus the heavy
profile's CPUs and memory). Read over the dashboard's HTTP state API, no ``ray.init``, with the
cluster token (the launcher's ``auth_token_path``, else ``RAY_AUTH_TOKEN*``:
:mod:`e2i_pipelines.launcher.ray_auth`).
In-progress heavy runs hold those slots; the cap counts them itself, as with Docker.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from e2i_pipelines.launcher import ray_auth
from e2i_pipelines.scaler.config import ResourceOverride
from e2i_pipelines.scaler.profile import HeavyProfile
from e2i_pipelines.tiers import TIER_NAMES, Tier, ray_resource


@dataclass(frozen=True)
class RayNode:
    """An alive Ray node and the resources it offers."""

    name: str
    resources: Mapping[str, float]

    def slots_for(self, profile: HeavyProfile, tier: Tier = Tier.HEAVY) -> int:
        """Runs of ``profile`` at ``tier`` this node holds at once."""
        tier_units = self.resources.get(ray_resource(tier), 0.0)
        if tier_units < 1:
            return 0
        by_cpu = self.resources.get("CPU", 0.0) / profile.cpus if profile.cpus else math.inf
        by_memory = self.resources.get("memory", 0.0) / profile.memory_bytes
        return max(0, math.floor(min(tier_units, by_cpu, by_memory) + 1e-9))


@dataclass(frozen=True)
class RayCapacity:
    """Heavy slots of a Ray cluster (same interface the scaler uses for a Docker host)."""

    address: str
    nodes: tuple[RayNode, ...] = field(default_factory=tuple)
    source: str = "ray"
    note: str = ""

    def need_of(self, profile: HeavyProfile) -> tuple[float, int]:
        return profile.cpus, profile.memory_bytes

    def slots_for(self, profile: HeavyProfile) -> int:
        return sum(node.slots_for(profile) for node in self.nodes)

    def with_override(self, override: ResourceOverride) -> RayCapacity:
        """Totals overrides are a single-host notion; a cluster is measured as it is."""
        if override.cpus is None and override.memory_bytes is None:
            return self
        return RayCapacity(self.address, self.nodes, self.source,
                           "capacity.cpus/memory overrides do not apply to a Ray cluster")

    def tier_units(self) -> dict[str, float]:
        """Total tier resource per tier over alive nodes (``{"heavy": 2.0, ...}``)."""
        return {name: sum(n.resources.get(ray_resource(name), 0.0) for n in self.nodes)
                for name in TIER_NAMES}

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "address": self.address, "note": self.note,
            "tier_units": self.tier_units(),
            "nodes": [{"name": n.name, **{k: v for k, v in n.resources.items()
                                          if k in ("CPU", "memory") or k.startswith("e2i-")}}
                      for n in self.nodes],
        }


def list_alive_nodes(address: str, token_path: str | None = None) -> list[RayNode]:
    """Alive nodes of the cluster whose dashboard is at ``address`` (http://host:8265)."""
    nodes = ray_auth.list_nodes(address, token_path, timeout=10)
    return [RayNode(name=n.node_name or n.node_id, resources=dict(n.resources_total or {}))
            for n in nodes if str(n.state) == "ALIVE"]


def ray_capacity(address: str, lister: Callable[[str], list[RayNode]] | None = None,
                 token_path: str | None = None) -> RayCapacity:
    """The cluster's heavy capacity now (``lister``: how nodes are read, default the state API
    with the token from ``token_path`` or the environment)."""
    if lister is None:
        return RayCapacity(address=address, nodes=tuple(
            list_alive_nodes(address, token_path) if token_path else list_alive_nodes(address)))
    return RayCapacity(address=address, nodes=tuple(lister(address)))
