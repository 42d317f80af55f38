#!/usr/bin/env bash
# Build the e2i project image (default tag e2i:local) on the local Debian base image.
# Repeatable on a fresh machine after scripts/start_services.sh: builds the base first
# (docker/build_base_image.sh, skipped when present), then the project with BuildKit through
# Debian's docker client (/usr/bin/docker; the other client on PATH has no buildx), trusting the
# host CA bundle as a build secret and reaching PyPI over host networking.
# Usage: docker/build_image.sh [TAG]   env: E2I_BASE_IMAGE (default e2i-base:bookworm);
# E2I_BUILD_CONTEXT and E2I_DOCKERFILE build another image the same way (docker/build_s3_image.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
TAG=${1:-${E2I_IMAGE:-e2i:local}}
CONTEXT=${E2I_BUILD_CONTEXT:-$repo}
DOCKERFILE=${E2I_DOCKERFILE:-$here/Dockerfile}
BASE=${E2I_BASE_IMAGE:-e2i-base:bookworm}
CA=${E2I_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=$(command -v docker)

# Only the local Debian base is built here; a public base (python:3.11-slim-bookworm) is pulled
# by the build itself.
if [ "$BASE" = "e2i-base:bookworm" ] || [ -n "${E2I_BUILD_LOCAL_BASE:-}" ]; then
  "$here/build_base_image.sh" "$BASE"
fi

secret=()
[ -s "$CA" ] && secret=(--secret "id=ca,src=$CA")
start=$(date +%s)
DOCKER_BUILDKIT=1 "$DOCKER" build --progress=plain --network host \
  -f "$DOCKERFILE" --build-arg "BASE_IMAGE=$BASE" "${secret[@]}" -t "$TAG" "$CONTEXT"
size=$("$DOCKER" image inspect -f '{{.Size}}' "$TAG")
echo "built $TAG in $(( $(date +%s) - start ))s, size $(awk -v s="$size" 'BEGIN{printf "%.0f MB", s/1e6}')"
