#!/usr/bin/env bash
# Build the trial S3 store's image (compose profile `s3`, default tag e2i-s3:local) from
# docker/s3/ on the local Debian base, like docker/build_image.sh: BuildKit through Debian's docker
# client, the host CA bundle as the optional `ca` build secret, PyPI over host networking.
# Usage: docker/build_s3_image.sh [TAG]   env: E2I_S3_IMAGE, E2I_BASE_IMAGE (default e2i-base:bookworm)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
TAG=${1:-${E2I_S3_IMAGE:-e2i-s3:local}}
BASE=${E2I_BASE_IMAGE:-e2i-base:bookworm}
CA=${E2I_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=$(command -v docker)
if [ "$BASE" = "e2i-base:bookworm" ] || [ -n "${E2I_BUILD_LOCAL_BASE:-}" ]; then
  "$here/build_base_image.sh" "$BASE"
fi
secret=()
[ -s "$CA" ] && secret=(--secret "id=ca,src=$CA")
start=$(date +%s)
DOCKER_BUILDKIT=1 "$DOCKER" build --progress=plain --network host \
  --build-arg "BASE_IMAGE=$BASE" "${secret[@]}" -t "$TAG" "$here/s3"
echo "built $TAG in $(( $(date +%s) - start ))s"
