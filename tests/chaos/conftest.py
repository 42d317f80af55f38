"""The chaos suite runs on the session's one compose stack (tests/support/shared_stack.py, which
orders it after the smoke tests and before backup/restore), and prints the fault table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.chaos_lib import FAULT_TABLE, format_table
from tests.stack.compose_stack import ComposeStack


@pytest.fixture()
def chaos_stack(compose_stack: ComposeStack) -> ComposeStack:
    """The session's stack: small tmpfs data volume, GraphQL on loopback, chaos tiers."""
    return compose_stack


def pytest_terminal_summary(terminalreporter) -> None:
    if not FAULT_TABLE:
        return
    table = format_table(FAULT_TABLE)
    terminalreporter.write_sep("=", "e2i fault table")
    terminalreporter.write_line(table)
    if os.environ.get("E2I_FAULT_TABLE"):
        Path(os.environ["E2I_FAULT_TABLE"]).write_text(table + "\n")
