#!/usr/bin/env bash
# Restore a backup made by scripts/backup.sh into the compose stack (which may be empty, e.g.
# after `down -v`): stops the Dagster/MLflow/API services, recreates the two databases from the
# dumps, replaces the contents of the data and MLflow artifact volumes, then starts the stack.
# Usage: scripts/restore.sh DIR   env: E2I_ENV_FILE, COMPOSE_PROJECT_NAME (see stack_lib.sh)
set -euo pipefail
source "$(dirname "$0")/stack_lib.sh"
dir=${1:?usage: scripts/restore.sh BACKUP_DIR}
[ -f "$dir/MANIFEST" ] || { echo "$dir has no MANIFEST: not a backup from scripts/backup.sh" >&2; exit 2; }
(cd "$dir" && sha256sum --quiet -c SHA256SUMS) || { echo "checksum mismatch in $dir" >&2; exit 1; }
# A backup of another project restores too: its files carry that project's volume names.
src_project=$(grep '^project=' "$dir/MANIFEST" | cut -d= -f2)

compose stop "${APP_SERVICES[@]}" >/dev/null 2>&1 || true
wait_postgres
pg_id=$(compose ps -q postgres)
for db in "$DAGSTER_DB" "$MLFLOW_DB"; do
  [ -f "$dir/$db.dump" ] || { echo "missing $dir/$db.dump" >&2; exit 1; }
  docker exec "$pg_id" psql -v ON_ERROR_STOP=1 -qU "$PG_USER" -d postgres \
    -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" -c "CREATE DATABASE \"$db\""
  docker exec -i "$pg_id" pg_restore -U "$PG_USER" -d "$db" --no-owner --exit-on-error <"$dir/$db.dump"
  echo "restored database $db"
done
# The dumps are restored without owners (as the superuser); a restart re-applies the roles
# (docker/postgres/roles.sql: ownership to each database's role, grants).
compose restart postgres >/dev/null
wait_postgres

# Mounted on the image's uid-10001 data directory, a new volume starts owned by that user.
for volume in "$DATA_VOLUME" "$ARTIFACT_VOLUME"; do
  archive=$dir/${volume/#$PROJECT/$src_project}.tar.gz
  [ -f "$archive" ] || { echo "missing $archive" >&2; exit 1; }
  docker volume create "$volume" >/dev/null
  docker run --rm -i --network none -v "$volume:/var/lib/e2i/data" --entrypoint sh "$E2I_IMAGE" \
    -c 'find /var/lib/e2i/data -mindepth 1 -delete && tar -xzf - -C /var/lib/e2i/data' <"$archive"
  echo "restored volume $volume"
done

compose up -d >/dev/null
echo "restore of $dir into stack $PROJECT done; check with scripts/stack_health.sh"
