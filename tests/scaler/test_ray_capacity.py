"""Heavy capacity of a Ray cluster from its nodes' resources (the live cluster: tests/ray)."""

from e2i_pipelines.scaler.capacity import measure_capacity
from e2i_pipelines.scaler.profile import HeavyProfile
from e2i_pipelines.scaler.ray_capacity import RayNode, ray_capacity

GIB = 1024**3
HEAVY = HeavyProfile(cpus=16, memory_bytes=32 * GIB, source="test")


def _nodes(_address: str) -> list[RayNode]:
    return [
        RayNode("head", {"memory": 8 * GIB}),
        RayNode("light-1", {"CPU": 8, "memory": 16 * GIB, "e2i-light": 4}),
        RayNode("heavy-1", {"CPU": 16, "memory": 64 * GIB, "e2i-heavy": 1, "e2i-fanout": 1}),
        RayNode("heavy-2", {"CPU": 32, "memory": 64 * GIB, "e2i-heavy": 2}),  # 2 runs fit
        RayNode("heavy-small", {"CPU": 8, "memory": 64 * GIB, "e2i-heavy": 1}),  # too few CPUs
    ]


def test_slots_are_summed_over_nodes_offering_the_heavy_tier():
    capacity = ray_capacity("http://head:8265", lister=_nodes)
    assert capacity.slots_for(HEAVY) == 3
    assert capacity.tier_units() == {"light": 4, "medium": 0, "heavy": 4}
    record = capacity.as_dict()
    assert record["source"] == "ray" and len(record["nodes"]) == 5


def test_memory_bounds_a_node_too():
    small = HeavyProfile(cpus=1, memory_bytes=40 * GIB, source="test")
    assert ray_capacity("x", lister=_nodes).slots_for(small) == 3  # 64 GiB nodes: one each


def test_no_heavy_nodes_means_no_heavy_capacity():
    capacity = ray_capacity("x", lister=lambda _a: [RayNode("light", {"CPU": 4, "e2i-light": 2})])
    assert capacity.slots_for(HEAVY) == 0


def test_auto_source_follows_a_ray_launcher(monkeypatch):
    from e2i_pipelines.scaler import ray_capacity as module

    class RayRunLauncher:  # measure_capacity recognises the engine by class name in the MRO
        address = "http://head:8265"

    monkeypatch.setattr(module, "list_alive_nodes", _nodes)
    capacity = measure_capacity("auto", RayRunLauncher())
    assert capacity.source == "ray" and capacity.slots_for(HEAVY) == 3
