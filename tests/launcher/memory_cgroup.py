"""A child memory cgroup with a hard limit, for tests that need a real kernel OOM kill."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.support.memory_cgroups import cap_memory, child_memory_cgroup


@contextmanager
def limited_memory_cgroup(limit_bytes: int) -> Iterator[Callable[[], None]]:
    """Yield a ``preexec_fn`` that moves a child process into a new cgroup capped at ``limit_bytes``
    (swap included); the cgroup is removed afterwards."""
    try:
        path, version = child_memory_cgroup(f"e2i-test-{uuid.uuid4().hex[:6]}")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        cap_memory(path, version, limit_bytes)

        def enter() -> None:
            (path / "cgroup.procs").write_text(str(os.getpid()))

        yield enter
    finally:
        path.rmdir()
