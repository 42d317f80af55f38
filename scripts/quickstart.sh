#!/usr/bin/env bash
# Install e2i and run the main job on embedded defaults: SQLite Dagster instance, local MLflow
# and Feast under ./.e2i_home. No Docker, no Postgres. Extra arguments go to the runner
# (e.g. --rows 1000000 --twins 10000000).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e .
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.e2i_home}"
exec python3 -m e2i_pipelines.quickstart "$@"
