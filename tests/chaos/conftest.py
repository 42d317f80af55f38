"""One compose stack for the chaos suite (module scope: down before later suites start), and the
fault table it prints."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.chaos_lib import FAULT_TABLE, format_table
from tests.stack.compose_stack import ComposeStack, running_stack
from tests.stack.conftest import COLD_START_TIMEOUT, require_stack_tools

CHAOS_OVERRIDE = Path(__file__).with_name("docker-compose.chaos.yml")
CHAOS_TIERS = {
    "light": {"cpus": 1, "memory": "1g", "memswap": "1g", "pids": 256, "shm": "64m"},
    "medium": {"cpus": 1, "memory": "1280m", "memswap": "1280m", "pids": 256, "shm": "64m"},
    "heavy": {"cpus": 2, "memory": "2560m", "memswap": "2560m", "pids": 512, "shm": "128m"},
}
"""Medium is small enough that a probe of 900 MiB (plus the run worker and its step process,
~350 MB each) is OOM-killed in its step process, heavy large enough that it succeeds."""


@pytest.fixture(scope="module")
def chaos_stack(docker_client) -> Iterator[ComposeStack]:
    require_stack_tools(docker_client, ComposeStack.image)
    with running_stack(docker_client, timeout=COLD_START_TIMEOUT, tiers=CHAOS_TIERS,
                       extra_compose_files=[CHAOS_OVERRIDE], monitoring_seconds=5) as stack:
        yield stack


def pytest_terminal_summary(terminalreporter) -> None:
    if not FAULT_TABLE:
        return
    table = format_table(FAULT_TABLE)
    terminalreporter.write_sep("=", "e2i fault table")
    terminalreporter.write_line(table)
    if os.environ.get("E2I_FAULT_TABLE"):
        Path(os.environ["E2I_FAULT_TABLE"]).write_text(table + "\n")
