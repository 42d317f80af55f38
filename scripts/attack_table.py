"""Print the attack suite's outcome as a Markdown table from pytest JUnit XML files.

Usage: ``python scripts/attack_table.py reports/junit-main.xml reports/junit-ray.xml``.
An attack test passes when the attack was refused and nothing happened (see tests/security/).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET  # nosec B405: parses our own pytest reports, not user input
from pathlib import Path

ATTACK_MODULES = ("tests.security.", "tests.ray.test_ray_token_auth")


def outcome(case: ET.Element) -> str:
    """passed / failed / error / skipped for one <testcase>."""
    for kind in ("failure", "error", "skipped"):
        if case.find(kind) is not None:
            return "failed" if kind == "failure" else kind
    return "passed"


def attack_rows(paths: list[Path]) -> list[tuple[str, str, str]]:
    """(module, test, outcome) for every attack test in the reports."""
    rows = []
    for path in paths:
        for case in ET.parse(path).iter("testcase"):  # nosec B314: our own report file
            module = case.get("classname", "")
            if module.startswith(ATTACK_MODULES):
                rows.append((module.rsplit(".", 1)[-1], case.get("name", ""), outcome(case)))
    return rows


def main(argv: list[str]) -> int:
    paths = [Path(p) for p in argv if Path(p).is_file()]
    rows = attack_rows(paths)
    print("| suite | attack (test) | outcome |\n|---|---|---|")
    for module, name, result in rows:
        print(f"| {module} | {name.removeprefix('test_').replace('_', ' ')} | {result} |")
    print("\n| suite | attacks | refused as expected |\n|---|---|---|")
    for module in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == module]
        print(f"| {module} | {len(mine)} | {sum(r[2] == 'passed' for r in mine)} |")
    failed = sum(r[2] in ("failed", "error") for r in rows)
    print(f"\n{len(rows)} attacks tried, {len(rows) - failed} refused as expected, {failed} not.")
    return 1 if failed or not rows else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
