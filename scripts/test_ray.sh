#!/usr/bin/env bash
# The Ray suite (tests/ray) inside its own network namespace: a real multi-node Ray cluster on
# loopback only. Called by scripts/test.sh; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/in_netns.sh python3 -m pytest -q -p no:cacheprovider tests/ray "$@"
