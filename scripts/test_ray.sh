#!/usr/bin/env bash
# The Ray suite (tests/ray) inside its own network namespace: a real multi-node Ray cluster on
# loopback only. Called by scripts/test.sh. Arguments replace the default target (tests/ray).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- tests/ray
exec bash scripts/in_netns.sh python3 -m pytest -q -p no:cacheprovider "$@"
