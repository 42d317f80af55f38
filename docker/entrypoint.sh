#!/bin/sh
# Entry of every e2i container (services and run containers); then the command.
# - Read-only root filesystem: numba wants a writable cache directory, so the kernels compiled into
#   the image (/opt/e2i/.numba_cache) are copied once to /tmp (a tmpfs) and loaded from there.
# - Docker secrets: NAME_FILE=/run/secrets/... becomes NAME for programs that read only the
#   environment (Dagster's dagster.yaml `env:`), via python -m e2i_pipelines.core.secrets; the
#   instance password (DAGSTER_PG_PASSWORD) becomes a 0600 libpq password file on /tmp instead
#   (PGPASSFILE; the variable is set empty), and the S3 secret key (AWS_SECRET_ACCESS_KEY) with its
#   key id a 0600 AWS credentials file on /tmp (AWS_SHARED_CREDENTIALS_FILE), so no process
#   environment holds either. With E2I_RUN_SECRETS_DIR (the compose daemon) both are also published
#   there for run containers.
set -eu
warm=/opt/e2i/.numba_cache
if [ "${NUMBA_CACHE_DIR:-$warm}" = "$warm" ] && [ -d "$warm" ] && ! [ -w "$warm" ]; then
  mkdir -p /tmp/numba_cache
  cp -a "$warm/." /tmp/numba_cache/ 2>/dev/null || true
  export NUMBA_CACHE_DIR=/tmp/numba_cache
fi
exec python -m e2i_pipelines.core.secrets "$@"
