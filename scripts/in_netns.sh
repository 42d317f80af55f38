#!/usr/bin/env bash
# Run a command in a new network + PID namespace with only loopback up: the Ray tests and
# benchmarks start their cluster there (outside one, Ray binds the machine's external interface).
# PostgreSQL is reached over its Unix socket (E2I_PG_HOST); every process in the namespace ends
# with the command. bash stays PID 1 of the namespace (no exec) so that it reaps the daemons Ray
# double-forks: a command as PID 1 would leave them zombies, and `ray stop` waits its full grace
# period for each. Usage: scripts/in_netns.sh python3 -m pytest tests/ray
set -euo pipefail
exec unshare --net --pid --fork --mount-proc bash -c \
  'ip link set lo up && export E2I_PG_HOST=${E2I_PG_HOST:-/var/run/postgresql} && "$@"; exit $?' _ "$@"
