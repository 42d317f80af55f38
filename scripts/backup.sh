#!/usr/bin/env bash
# Back up the compose stack: PostgreSQL dumps of the Dagster and MLflow databases (pg_dump -Fc,
# consistent snapshots, taken while the stack runs) and tarballs of the MLflow artifact volume
# and the E2I data volume (taken live: stop writers first if runs are in flight).
# Usage: scripts/backup.sh [DIR]   (default backups/<project>-<UTC time>); prints DIR at the end.
# env: E2I_ENV_FILE, COMPOSE_PROJECT_NAME (see scripts/stack_lib.sh)
set -euo pipefail
source "$(dirname "$0")/stack_lib.sh"
dir=${1:-$repo/backups/$PROJECT-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$dir"
chmod 700 "$dir"
pg_id=$(compose ps -q postgres)
[ -n "$pg_id" ] || { echo "postgres of stack $PROJECT is not running" >&2; exit 1; }

for db in "$DAGSTER_DB" "$MLFLOW_DB"; do
  docker exec "$pg_id" pg_dump -U "$PG_USER" -d "$db" -Fc >"$dir/$db.dump"
  echo "dumped database $db ($(stat -c %s "$dir/$db.dump") bytes)"
done

# Volume tarballs are streamed out of a throw-away container (no network, volume read-only).
for volume in "$DATA_VOLUME" "$ARTIFACT_VOLUME"; do
  docker volume inspect "$volume" >/dev/null
  docker run --rm --network none -v "$volume:/source:ro" --entrypoint tar "$E2I_IMAGE" \
    -czf - -C /source . >"$dir/$volume.tar.gz"
  echo "archived volume $volume ($(stat -c %s "$dir/$volume.tar.gz") bytes)"
done

{
  echo "project=$PROJECT"
  echo "created=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "databases=$DAGSTER_DB,$MLFLOW_DB"
  echo "volumes=$DATA_VOLUME,$ARTIFACT_VOLUME"
} >"$dir/MANIFEST"
(cd "$dir" && sha256sum -- *.dump *.tar.gz >SHA256SUMS)
echo "backup written to $dir"
