# Shared by scripts/stack_health.sh, backup.sh and restore.sh (sourced, not run).
# Which stack: E2I_ENV_FILE (default docker/.env) and COMPOSE_PROJECT_NAME (default: the env
# file's COMPOSE_PROJECT_NAME, else e2i). Compose: docker-compose (Debian's 1.29) unless
# E2I_COMPOSE says otherwise (e.g. "docker compose").
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2I_ENV_FILE=${E2I_ENV_FILE:-$repo/docker/.env}
[ -f "$E2I_ENV_FILE" ] || { echo "no env file $E2I_ENV_FILE (copy docker/.env.example)" >&2; exit 2; }
env_value() {  # env_value NAME DEFAULT: a value from the env file (no shell evaluation)
  local line
  line=$(grep -E "^$1=" "$E2I_ENV_FILE" | tail -1 || true)
  if [ -n "$line" ]; then printf '%s' "${line#*=}"; else printf '%s' "$2"; fi
}
PROJECT=${COMPOSE_PROJECT_NAME:-$(env_value COMPOSE_PROJECT_NAME e2i)}
export COMPOSE_PROJECT_NAME=$PROJECT
read -r -a COMPOSE_CMD <<<"${E2I_COMPOSE:-docker-compose}"
compose() { "${COMPOSE_CMD[@]}" -f "$repo/docker/docker-compose.yml" --env-file "$E2I_ENV_FILE" -p "$PROJECT" "$@"; }
E2I_IMAGE=${E2I_IMAGE:-$(env_value E2I_IMAGE e2i:local)}
PG_USER=$(env_value POSTGRES_USER e2i)
DAGSTER_DB=$(env_value DAGSTER_PG_DB dagster)
MLFLOW_DB=$(env_value MLFLOW_PG_DB mlflow)
DATA_VOLUME=${PROJECT}_data
ARTIFACT_VOLUME=${PROJECT}_mlflow_artifacts
APP_SERVICES=(api webserver daemon code-server mlflow)

# Wait until the postgres service is healthy (start it when it is not running).
wait_postgres() {
  local id state
  compose up -d postgres >/dev/null
  for _ in $(seq 1 120); do
    id=$(compose ps -q postgres)
    state=$(docker inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null || true)
    [ "$state" = healthy ] && return 0
    sleep 2
  done
  echo "postgres of stack $PROJECT did not become healthy" >&2
  return 1
}
