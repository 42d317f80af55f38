"""The stack tests run on the session's one compose stack (tests/support/shared_stack.py)."""

from __future__ import annotations

import pytest

from tests.stack.compose_stack import ComposeStack


@pytest.fixture()
def stack(compose_stack: ComposeStack) -> ComposeStack:
    """The session's e2i stack (with monitoring and Caddy), healthy when the session starts it."""
    return compose_stack
