#!/usr/bin/env bash
# Make the compose stack's Docker secrets (Postgres passwords and the connection URLs built from
# them) in E2I_SECRETS_DIR (default docker/secrets; gitignored). Idempotent: an existing file is
# kept (delete it and restart postgres to rotate that password: roles.sql applies it at start).
# The directory is 0700 (root only on the host); files are 0644 so the containers' non-root users
# can read their bind-mounted copy. Role and database names come from the env file (stack_lib.sh).
# Usage: scripts/make_secrets.sh   env: E2I_ENV_FILE, E2I_SECRETS_DIR
set -euo pipefail
source "$(dirname "$0")/stack_lib.sh"
dir=${E2I_SECRETS_DIR:-$(env_value E2I_SECRETS_DIR "$repo/docker/secrets")}
case "$dir" in /*) ;; *) dir="$repo/docker/$dir" ;; esac  # relative: to docker/, as compose reads it
mkdir -p "$dir"
chmod 0700 "$dir"
umask 022
random() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
put() {  # put NAME VALUE: write the secret file unless it exists
  [ -s "$dir/$1" ] || { printf '%s' "$2" >"$dir/$1.tmp" && mv "$dir/$1.tmp" "$dir/$1"; }
  chmod 0644 "$dir/$1"
}
for name in postgres_password dagster_pg_password api_pg_password mlflow_pg_password exporter_pg_password; do
  put "$name" "$(random)"
done
api_user=$(env_value API_PG_USER e2i_api)
mlflow_user=$(env_value MLFLOW_PG_USER e2i_mlflow)
put api_database_url "postgresql://$api_user:$(cat "$dir/api_pg_password")@postgres:5432/$DAGSTER_DB"
put mlflow_database_url "postgresql+psycopg2://$mlflow_user:$(cat "$dir/mlflow_pg_password")@postgres:5432/$MLFLOW_DB"
# UI login: the session-cookie signing key, and the IdP's client secret (empty until written here).
put ui_session_secret "$(random)$(random)"
# Ray trial (docker-compose.ray.yml): the cluster's auth token, for every node and Ray client.
put ray_auth_token "$(random)$(random)"
[ -e "$dir/oidc_client_secret" ] || put oidc_client_secret ""
# Object storage (E2I_STORAGE_URL=s3://...): the secret access key (empty until written here).
[ -e "$dir/s3_secret_access_key" ] || put s3_secret_access_key ""
echo "secrets in $dir: $(ls "$dir" | tr '\n' ' ')"
