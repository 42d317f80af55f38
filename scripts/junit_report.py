"""Read pytest JUnit XML reports: each test's outcome and its pytest node id.

Usage: ``python scripts/junit_report.py failed reports/junit-main.xml ...`` prints the node ids
of the tests that failed or errored, one per line (scripts/test.sh re-runs them serially).
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET  # nosec B405: parses our own pytest reports, not user input
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def outcome(case: ET.Element) -> str:
    """passed / failed / error / skipped for one <testcase>."""
    for kind in ("failure", "error", "skipped"):
        if case.find(kind) is not None:
            return "failed" if kind == "failure" else kind
    return "passed"


XDIST_GROUP = re.compile(r"@(engine|tests/[^@]*\.py)$")
"""The ``@<group>`` pytest-xdist appends to a test's name under ``--dist loadgroup``
(tests/conftest.py: ``engine`` or the test's file)."""


def test_name(case: ET.Element) -> str:
    """The test's name as pytest selects it (without the xdist group suffix)."""
    return XDIST_GROUP.sub("", case.get("name", ""))


def node_id(case: ET.Element) -> str:
    """``tests/x/test_y.py::[Class::]test_z[param]`` from JUnit's dotted classname and name."""
    parts = case.get("classname", "").split(".")
    for split in range(len(parts), 0, -1):
        path = "/".join(parts[:split]) + ".py"
        if (ROOT / path).is_file():
            return "::".join([path, *parts[split:], test_name(case)])
    return "::".join([*parts, test_name(case)])


def cases(paths: list[Path]) -> list[ET.Element]:
    """Every <testcase> of the reports that exist."""
    return [case for path in paths if path.is_file()
            for case in ET.parse(path).iter("testcase")]  # nosec B314: our own report files


def failed(paths: list[Path]) -> list[str]:
    """Node ids of the tests that failed or errored."""
    return [node_id(case) for case in cases(paths) if outcome(case) in ("failed", "error")]


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "failed":
        sys.exit("usage: junit_report.py failed REPORT.xml ...")
    for test in failed([Path(p) for p in sys.argv[2:]]):
        print(test)
