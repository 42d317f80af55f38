"""Fixtures for the launcher's real-engine tests: the e2i image and a launcher harness."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import require
from tests.launcher.harness import IMAGE, LauncherHarness


@pytest.fixture()
def e2i_image(docker_client) -> str:
    """The project image (built by docker/build_image.sh); fails under CI when missing."""
    try:
        docker_client.images.get(IMAGE)
        present = True
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound or API errors
        present = False
    require(present, f"Docker image {IMAGE} (docker/build_image.sh)")
    return IMAGE


@pytest.fixture()
def harness(e2i_image, postgres_db, tmp_path) -> Iterator[LauncherHarness]:
    h = LauncherHarness(tmp_path / "dagster_home", postgres_db)
    try:
        yield h
    finally:
        h.close()
