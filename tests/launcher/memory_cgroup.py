"""A child memory cgroup with a hard limit, for tests that need a real kernel OOM kill."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from e2i_pipelines.launcher.cgroup_memory import own_memory_cgroup


@contextmanager
def limited_memory_cgroup(limit_bytes: int) -> Iterator[Callable[[], None]]:
    """Yield a ``preexec_fn`` that moves a child process into a new cgroup capped at ``limit_bytes``
    (swap included); the cgroup is removed afterwards."""
    own = own_memory_cgroup()
    if own is None:
        pytest.fail("no memory cgroup on this machine")
    path = own.path / f"e2i-test-{uuid.uuid4().hex[:6]}"
    path.mkdir()
    limit = str(limit_bytes)
    try:
        if own.version == 1:
            (path / "memory.limit_in_bytes").write_text(limit)
            if (path / "memory.memsw.limit_in_bytes").exists():
                (path / "memory.memsw.limit_in_bytes").write_text(limit)
        else:
            (path / "memory.max").write_text(limit)

        def enter() -> None:
            (path / "cgroup.procs").write_text(str(os.getpid()))

        yield enter
    finally:
        path.rmdir()
