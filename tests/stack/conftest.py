"""The compose stack fixture: built, brought up once per module, measured, torn down (down -v)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.stack.compose_stack import ComposeStack

COLD_START_TIMEOUT = 900


def _image_present(docker_client, name: str) -> bool:
    try:
        docker_client.images.get(name)
    except Exception:  # noqa: BLE001 - any lookup failure means "not there"
        return False
    return True


@pytest.fixture(scope="module")
def stack(docker_client) -> Iterator[ComposeStack]:
    """A fresh e2i stack (own project, volumes, ports); yields it healthy, removes it after."""
    require(shutil.which("docker-compose") is not None, "docker-compose (apt-get install docker-compose)")
    workdir = Path(tempfile.mkdtemp(prefix="e2i-stack-"))
    workdir.chmod(0o755)
    stack = ComposeStack(workdir=workdir)
    require(_image_present(docker_client, stack.image), f"image {stack.image} (docker/build_image.sh)")
    try:
        stack.compose("build", "postgres", timeout=900)
        start = time.monotonic()
        up = stack.compose("up", "-d", timeout=COLD_START_TIMEOUT, check=False)
        stack.cold_start_seconds = stack.wait_healthy(docker_client, timeout=COLD_START_TIMEOUT, start=start)
        print(f"\nstack {stack.project}: cold start (up -> all healthy) {stack.cold_start_seconds:.1f}s"
              f" (up exited {up.returncode}); healthy after: {stack.healthy_after}")
        yield stack
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            stack.cleanup(docker_client)
