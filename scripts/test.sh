#!/usr/bin/env bash
# Install and start everything the tests need (Python deps, PostgreSQL, dockerd, the local base
# and project images), lint, then run the whole test suite in three pytest runs: everything but
# tests/ray and the shared compose stack (E2I_TEST_WORKERS pytest-xdist workers, 0 = none), then
# the stack, monitoring and chaos tests on one compose stack, then the Ray suite in a network
# namespace of its own (scripts/test_ray.sh). Each run prints its 25 slowest tests. Services that
# are missing make the tests fail, not skip. Extra arguments run only pytest with them (e.g.
# tests/foundation -x). tests/README.md: the suites, their services and durations.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e '.[dev,ray]'
bash scripts/start_services.sh
bash docker/build_base_image.sh
bash docker/build_image.sh
ruff check .
bandit -q -r e2i_pipelines e2i_api -lll
lint-imports --no-cache  # layers and no circles: [tool.importlinter] in pyproject.toml
export E2I_REQUIRE_SERVICES=1
# A long session opens many SQLite instances and sockets; the default 1024 fds is too few.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
pytest=(python3 -m pytest -q -p no:cacheprovider --durations=25)
if [ $# -gt 0 ]; then exec "${pytest[@]}" "$@"; fi
workers=${E2I_TEST_WORKERS:-0}
status=0
mkdir -p reports
"${pytest[@]}" --ignore=tests/ray -m "not stack" -n "$workers" --dist loadgroup \
  --junitxml=reports/junit-main.xml || status=$?
"${pytest[@]}" --ignore=tests/ray -m stack --junitxml=reports/junit-stack.xml || status=$?
bash scripts/test_ray.sh --junitxml=reports/junit-ray.xml || status=$?
# The attack suite's outcome (the README's Security table is copied from this).
python3 scripts/attack_table.py reports/junit-main.xml reports/junit-stack.xml reports/junit-ray.xml \
  || status=$?
exit "$status"
