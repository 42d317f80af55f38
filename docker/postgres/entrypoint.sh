#!/bin/sh
# First start: initdb in $PGDATA with the bootstrap superuser POSTGRES_USER (password from
# POSTGRES_PASSWORD_FILE, a Docker secret, or POSTGRES_PASSWORD). Every start (first start and
# upgrades alike): roles.sql creates/updates the stack's roles, none superuser, and their
# databases (see roles.sql), with passwords from the secret files *_PG_PASSWORD_FILE; then postgres.
# Connections from other containers need a password (scram); the superuser is for backups over the
# local socket only (no service connects as it).
set -eu
: "${POSTGRES_USER:?POSTGRES_USER is not set}"
secret() {  # secret NAME VALUE FILE: VALUE, else the content of FILE (NAME_FILE)
  value=$2
  if [ -z "$value" ] && [ -n "$3" ]; then value=$(cat "$3"); fi
  [ -n "$value" ] || { echo "$1 (or $1_FILE) is not set" >&2; exit 1; }
  printf '%s' "$value"
}
POSTGRES_PASSWORD=$(secret POSTGRES_PASSWORD "${POSTGRES_PASSWORD:-}" "${POSTGRES_PASSWORD_FILE:-}")
DAGSTER_PG_PASSWORD=$(secret DAGSTER_PG_PASSWORD "${DAGSTER_PG_PASSWORD:-}" "${DAGSTER_PG_PASSWORD_FILE:-}")
API_PG_PASSWORD=$(secret API_PG_PASSWORD "${API_PG_PASSWORD:-}" "${API_PG_PASSWORD_FILE:-}")
MLFLOW_PG_PASSWORD=$(secret MLFLOW_PG_PASSWORD "${MLFLOW_PG_PASSWORD:-}" "${MLFLOW_PG_PASSWORD_FILE:-}")
EXPORTER_PG_PASSWORD=$(secret EXPORTER_PG_PASSWORD "${EXPORTER_PG_PASSWORD:-}" "${EXPORTER_PG_PASSWORD_FILE:-}")
DAGSTER_PG_USER=${DAGSTER_PG_USER:-e2i_dagster}
API_PG_USER=${API_PG_USER:-e2i_api}
MLFLOW_PG_USER=${MLFLOW_PG_USER:-e2i_mlflow}
EXPORTER_PG_USER=${EXPORTER_PG_USER:-e2i_exporter}
for role in "$DAGSTER_PG_USER" "$API_PG_USER" "$MLFLOW_PG_USER" "$EXPORTER_PG_USER"; do
  [ "$role" != "$POSTGRES_USER" ] || { echo "role $role must differ from the superuser POSTGRES_USER" >&2; exit 1; }
done

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  cat >>"$PGDATA/postgresql.conf" <<CONF
listen_addresses = '*'
unix_socket_directories = '/var/run/postgresql'
max_connections = ${POSTGRES_MAX_CONNECTIONS:-200}
shared_buffers = ${POSTGRES_SHARED_BUFFERS:-128MB}
CONF
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "initialised $PGDATA"
fi

pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres \
  -v dagster_db="${DAGSTER_PG_DB:-dagster}" -v mlflow_db="${MLFLOW_PG_DB:-mlflow}" \
  -v dagster_role="$DAGSTER_PG_USER" -v api_role="$API_PG_USER" \
  -v mlflow_role="$MLFLOW_PG_USER" -v exporter_role="$EXPORTER_PG_USER" \
  -v dagster_password="$DAGSTER_PG_PASSWORD" -v api_password="$API_PG_PASSWORD" \
  -v mlflow_password="$MLFLOW_PG_PASSWORD" -v exporter_password="$EXPORTER_PG_PASSWORD" \
  -f /usr/local/share/e2i/roles.sql >/dev/null
echo "roles ready: $DAGSTER_PG_USER $API_PG_USER $MLFLOW_PG_USER $EXPORTER_PG_USER (no superuser)"
pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
if [ "$1" = postgres ]; then shift; exec postgres -D "$PGDATA" "$@"; fi
exec "$@"
