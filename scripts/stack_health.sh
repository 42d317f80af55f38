#!/usr/bin/env bash
# Health of every service of the compose stack: one line per service (state, health, restarts)
# and exit 1 when any service is missing, not running or not healthy.
# Usage: scripts/stack_health.sh   env: E2I_ENV_FILE, COMPOSE_PROJECT_NAME (see stack_lib.sh)
set -euo pipefail
source "$(dirname "$0")/stack_lib.sh"
bad=0
# Services of a compose profile (e.g. s3) run only when that profile was started: absent is fine.
profiled=" $(compose config | python3 -c 'import sys, yaml
print(" ".join(n for n, s in yaml.safe_load(sys.stdin)["services"].items() if s.get("profiles")))') "
printf '%-12s %-10s %-10s %s\n' SERVICE STATE HEALTH RESTARTS
for service in $(compose config --services); do
  id=$(compose ps -q "$service" 2>/dev/null || true)
  if [ -z "$id" ] && [[ "$profiled" == *" $service "* ]]; then
    printf '%-12s %-10s %-10s %s\n' "$service" "not started (profile)" - -; continue
  fi
  if [ -z "$id" ]; then
    printf '%-12s %-10s %-10s %s\n' "$service" missing - -; bad=1; continue
  fi
  read -r state health restarts < <(docker inspect -f \
    '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.RestartCount}}' "$id")
  printf '%-12s %-10s %-10s %s\n' "$service" "$state" "$health" "$restarts"
  if [ "$state" != running ] || [ "$health" != healthy ]; then
    bad=1
    last=$(docker inspect -f '{{if .State.Health}}{{range .State.Health.Log}}{{.Output}}{{end}}{{end}}' "$id" | tail -1)
    [ -n "$last" ] && echo "    last check: $last"
  fi
done
[ "$bad" = 0 ] && echo "stack $PROJECT: all services healthy" || echo "stack $PROJECT: UNHEALTHY" >&2
exit "$bad"
