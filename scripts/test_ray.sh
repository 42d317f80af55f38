#!/usr/bin/env bash
# The Ray suite (tests/ray) inside its own network namespace: a real multi-node Ray cluster on
# loopback only, with its object store (moto's S3 server) on the same loopback: the nodes share
# no disk. Called by scripts/test.sh. Arguments go to pytest; without a test path among
# them the target is tests/ray.
set -euo pipefail
cd "$(dirname "$0")/.."
target=(tests/ray)
for arg in "$@"; do [[ "$arg" == tests/* ]] && target=(); done
exec bash scripts/in_netns.sh python3 -m pytest -q -p no:cacheprovider --durations=25 "${target[@]}" "$@"
