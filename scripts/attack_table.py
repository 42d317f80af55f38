"""Print the attack suite's outcome as a Markdown table from pytest JUnit XML files.

Usage: ``python scripts/attack_table.py reports/junit-main.xml reports/junit-ray.xml``
(later reports override earlier ones: the serial re-run's outcome counts).
An attack test passes when the attack was refused and nothing happened (see tests/security/).
"""

from __future__ import annotations

import sys
from pathlib import Path

from junit_report import cases, outcome, test_name

ATTACK_MODULES = ("tests.security.", "tests.ray.test_ray_token_auth")


def attack_rows(paths: list[Path]) -> list[tuple[str, str, str]]:
    """(module, test, outcome) for every attack test in the reports; a test found in several
    reports (a serial re-run after a parallel run) keeps its last outcome."""
    rows: dict[tuple[str, str], str] = {}
    for case in cases(paths):
        module = case.get("classname", "")
        if module.startswith(ATTACK_MODULES):
            rows[(module.rsplit(".", 1)[-1], test_name(case))] = outcome(case)
    return [(module, name, result) for (module, name), result in rows.items()]


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
