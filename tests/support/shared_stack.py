"""One compose stack per test session for the stack smoke test, the monitoring stack and the chaos
suite: the e2i stack with Caddy, the monitoring profile (exporter + Prometheus) and the chaos
override (small tmpfs data volume, GraphQL published on loopback), brought up once and removed
with its volumes at the end of the session.

``STACK_ORDER`` is the order those tests run in (tests/conftest.py sorts them last): the monitoring
test first (it counts the stack's first run), then the smoke tests, then the faults, then
backup -> wipe -> restore at the very end.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import require
from tests.stack.compose_stack import COMPOSE_FILE, ComposeStack, image_present, running_stack

COLD_START_TIMEOUT = 900
MONITORING_FILE = COMPOSE_FILE.with_name("docker-compose.monitoring.yml")
CHAOS_OVERRIDE = Path(__file__).resolve().parents[1] / "chaos" / "docker-compose.chaos.yml"
SHARED_TIERS: dict[str, dict[str, Any]] = {
    "light": {"cpus": 1, "memory": "1g", "memswap": "1g", "pids": 256, "shm": "64m"},
    "medium": {"cpus": 1, "memory": "1280m", "memswap": "1280m", "pids": 256, "shm": "64m"},
    "heavy": {"cpus": 2, "memory": "2560m", "memswap": "2560m", "pids": 512, "shm": "128m"},
}
"""Medium is small enough that a chaos probe of 900 MiB (plus the run worker and its step process,
~350 MB each) is OOM-killed in its step process, heavy large enough that it succeeds."""

STACK_ORDER = (
    "tests/stack/test_monitoring_stack.py::",
    "tests/stack/test_stack_smoke.py::test_stack_comes_up_healthy",
    "tests/stack/test_stack_smoke.py::test_health_command_fails_when_a_service_is_down",
    "tests/stack/test_stack_smoke.py::test_runs_through_the_api_get_sized_containers",
    "tests/chaos/test_chaos.py::",
    "tests/stack/test_stack_smoke.py::test_backup_wipe_restore_brings_runs_back",
)
"""Node-id prefixes of the tests on the shared stack, in the order they run."""


def stack_rank(nodeid: str) -> int | None:
    """Position of a test in STACK_ORDER (None: not a shared-stack test)."""
    for rank, prefix in enumerate(STACK_ORDER):
        if nodeid.startswith(prefix):
            return rank
    return None


def require_stack_tools(docker_client: Any, image: str) -> None:
    """docker-compose and the project image, or skip locally / fail under CI."""
    require(shutil.which("docker-compose") is not None, "docker-compose (apt-get install docker-compose)")
    require(image_present(docker_client, image), f"image {image} (docker/build_image.sh)")


def shared_stack(docker_client: Any) -> Iterator[ComposeStack]:
    """The session's stack, healthy (cold start printed); removed with its volumes afterwards."""
    require_stack_tools(docker_client, ComposeStack.image)
    with running_stack(docker_client, timeout=COLD_START_TIMEOUT, build=("postgres", "prometheus"),
                       tiers=SHARED_TIERS, extra_compose_files=[MONITORING_FILE, CHAOS_OVERRIDE],
                       profiles=["monitoring"], monitoring_seconds=5) as stack:
        yield stack
