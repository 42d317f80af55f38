#!/usr/bin/env bash
# Install and start everything the tests need (Python deps, PostgreSQL, dockerd, the local base
# and project images), lint, then run the whole test suite. Services that are missing make the
# tests fail, not skip. Extra arguments go to pytest (e.g. tests/foundation -x).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e '.[dev]'
bash scripts/start_services.sh
bash docker/build_base_image.sh
bash docker/build_image.sh
ruff check .
export E2I_REQUIRE_SERVICES=1
# A long session opens many SQLite instances and sockets; the default 1024 fds is too few.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 -m pytest -q -p no:cacheprovider "$@"
