#!/usr/bin/env bash
# Build the trial S3 store's image (compose profile `s3`, default tag e2i-s3:local) from
# docker/s3/ on the local Debian base, the same way as the project image: docker/build_image.sh
# with docker/s3 as its build context (BuildKit, the host CA bundle as the `ca` build secret,
# PyPI over host networking).
# Usage: docker/build_s3_image.sh [TAG]   env: E2I_S3_IMAGE, E2I_BASE_IMAGE (default e2i-base:bookworm)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
E2I_BUILD_CONTEXT="$here/s3" E2I_DOCKERFILE="$here/s3/Dockerfile" \
  exec "$here/build_image.sh" "${1:-${E2I_S3_IMAGE:-e2i-s3:local}}"
