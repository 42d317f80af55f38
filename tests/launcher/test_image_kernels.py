"""The project image ships its numba kernels compiled: a run container loads, not compiles."""

import json

import pytest

from e2i_pipelines.analytics.warm_kernels import KERNELS

pytestmark = pytest.mark.docker


def test_run_image_loads_numba_kernels_from_its_cache(docker_client, e2i_image):
    out = docker_client.containers.run(
        e2i_image, ["python", "-m", "e2i_pipelines.analytics.warm_kernels", "--json"],
        remove=True, network_mode="none", mem_limit="1g")
    stats = json.loads(out.decode().strip().splitlines()[-1])
    assert set(stats) == set(KERNELS)
    for name, counts in stats.items():  # a hit per compiled signature (e.g. C and F input)
        assert counts["misses"] == 0, f"{name} was compiled in the container: {counts}"
        assert counts["hits"] >= 1, f"{name} was not run: {counts}"
