#!/usr/bin/env bash
# Install (if missing) and start what the integration tests need: PostgreSQL and dockerd.
# Idempotent; safe to run on a fresh Debian 12 machine as root or on a developer box again.
set -euo pipefail
PG_USER=${E2I_PG_USER:-e2i}
PG_PASSWORD=${E2I_PG_PASSWORD:-e2i}

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v ip >/dev/null || need+=(iproute2)          # the Ray suite's network namespace
command -v promtool >/dev/null || need+=(prometheus)  # monitoring tests: promtool, a real scrape
command -v caddy >/dev/null || need+=(caddy)           # UI login tests: Caddy in front (tests/security)
command -v chromium >/dev/null || need+=(chromium chromium-driver)  # UI login tests: headless browser
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The caddy package enables a system service on :80; the tests run their own Caddy on free ports.
if command -v systemctl >/dev/null && systemctl is-enabled caddy >/dev/null 2>&1; then
  systemctl disable --now caddy >/dev/null 2>&1 || true
fi

# PostgreSQL: Debian's default cluster on 127.0.0.1:5432, role e2i/e2i with CREATEDB.
cluster=$(pg_lsclusters -h | awk 'NR==1{print $1" "$2}')
if [ -z "$cluster" ]; then pg_createcluster 15 main >/dev/null; cluster="15 main"; fi
# shellcheck disable=SC2086
pg_ctlcluster $cluster start 2>/dev/null || true
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 && break; sleep 1; done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE ROLE $PG_USER LOGIN SUPERUSER PASSWORD '$PG_PASSWORD'\""

# The Ray tests run inside a network namespace and reach PostgreSQL over its Unix socket.
hba=$(su postgres -c "psql -qtAc 'SHOW hba_file'")
if ! grep -q "^local *all *$PG_USER " "$hba"; then
  sed -i "0,/^local/s//local   all             $PG_USER                                scram-sha-256\n&/" "$hba"
  su postgres -c "psql -qc 'SELECT pg_reload_conf()'" >/dev/null
fi

# The instance password for run containers of the repository's dagster.yaml (bound read-only at
# /run/secrets/dagster_pg_password): the role's password, 0600, owned by the image's run user
# (uid 10001), in a 0700 root directory. Kept when present (delete it after changing the password).
secret=/etc/e2i/secrets/dagster_pg_password
if [ ! -s "$secret" ]; then
  install -d -m 0700 /etc/e2i/secrets
  [ -d "$secret" ] && rmdir "$secret"  # an empty directory Docker made for a bind of a missing file
  (umask 077; printf '%s' "$PG_PASSWORD" >"$secret.tmp")
  chown 10001:10001 "$secret.tmp"
  mv "$secret.tmp" "$secret"
fi

# Docker engine: no bridge/iptables here; containers use host networking or project networks.
# Without the engine's iptables rules, Docker networks are isolated from each other only if the
# host does not route between their bridges: IP forwarding stays off (a run container on the
# stack's `runs` network must not reach the webserver or code server by address; tests/security).
sysctl -qw net.ipv4.ip_forward=0
if ! docker info >/dev/null 2>&1; then
  nohup dockerd --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
    >/var/log/e2i-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/e2i-dockerd.log" >&2; exit 1; }
echo "services up: postgres on 127.0.0.1:5432 (user $PG_USER), dockerd on /var/run/docker.sock"
