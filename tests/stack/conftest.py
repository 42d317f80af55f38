"""The compose stack fixture: built, brought up once per module, measured, torn down (down -v)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import require
from tests.stack.compose_stack import ComposeStack, image_present, running_stack

COLD_START_TIMEOUT = 900


def require_stack_tools(docker_client, image: str) -> None:
    """docker-compose and the project image, or skip locally / fail under CI."""
    require(shutil.which("docker-compose") is not None, "docker-compose (apt-get install docker-compose)")
    require(image_present(docker_client, image), f"image {image} (docker/build_image.sh)")


@pytest.fixture(scope="module")
def stack(docker_client) -> Iterator[ComposeStack]:
    """A fresh e2i stack (own project, volumes, ports); yields it healthy, removes it after."""
    require_stack_tools(docker_client, ComposeStack.image)
    with running_stack(docker_client, timeout=COLD_START_TIMEOUT) as fresh:
        yield fresh
