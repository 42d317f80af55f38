#!/usr/bin/env bash
# Build a local Python 3.11 base image from Debian bookworm (no registry needed):
#   debootstrap --variant=minbase ... bookworm ROOT && tar -C ROOT -c . | docker import - IMAGE
# Idempotent: does nothing when IMAGE already exists (set E2I_REBUILD_BASE=1 to force).
# Usage: docker/build_base_image.sh [IMAGE]   (default: e2i-base:bookworm)
set -euo pipefail
IMAGE=${1:-${E2I_BASE_IMAGE:-e2i-base:bookworm}}
MIRROR=${E2I_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# python3-venv brings ensurepip (pip wheel); libgomp1 is LightGBM's OpenMP runtime.
PACKAGES=python3,python3-venv,ca-certificates,libgomp1

if [ "${E2I_REBUILD_BASE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE exists; skipping (E2I_REBUILD_BASE=1 rebuilds)"
  exit 0
fi
command -v debootstrap >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

root=$(mktemp -d /tmp/e2i-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm into $root ..."
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || {
  tail -30 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# Trim what a container never needs: apt lists and caches, docs, man pages, locales.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
# Same apt sources as the host's Debian, so `apt-get install` works in derived images.
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$MIRROR" "$MIRROR" \
  >"$root/etc/apt/sources.list"

tar -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  - "$IMAGE" >/dev/null
echo "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
