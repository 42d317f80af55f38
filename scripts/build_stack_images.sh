#!/usr/bin/env bash
# Build every image of the compose stack from the one base selected by E2I_BASE_IMAGE in the env
# file (docker/.env): e2i-base:bookworm (local Debian base, built here when missing; no registry
# needed) or a public image such as python:3.11-slim-bookworm (production).
#   project image  E2I_IMAGE           docker/build_image.sh (BuildKit)
#   postgres       E2I_POSTGRES_IMAGE  docker-compose build postgres
#   trial S3 store E2I_S3_IMAGE        docker/build_s3_image.sh, when COMPOSE_PROFILES (the
#                                      environment's, else the env file's) includes s3
# Usage: scripts/build_stack_images.sh   env: E2I_ENV_FILE, COMPOSE_PROJECT_NAME (see stack_lib.sh)
set -euo pipefail
source "$(dirname "$0")/stack_lib.sh"
export E2I_BASE_IMAGE=${E2I_BASE_IMAGE:-$(env_value E2I_BASE_IMAGE e2i-base:bookworm)}
export E2I_IMAGE
echo "base image: $E2I_BASE_IMAGE"
if [ "$E2I_BASE_IMAGE" = e2i-base:bookworm ]; then
  bash "$repo/docker/build_base_image.sh" "$E2I_BASE_IMAGE"
else
  # Pull first: docker/build_image.sh builds a Debian base under the given name when it is absent.
  docker pull "$E2I_BASE_IMAGE"
fi
bash "$repo/docker/build_image.sh" "$E2I_IMAGE"
compose build postgres
profiles=${COMPOSE_PROFILES-$(env_value COMPOSE_PROFILES "")}
if [[ ",${profiles// /}," == *,s3,* ]]; then
  bash "$repo/docker/build_s3_image.sh" "${E2I_S3_IMAGE:-$(env_value E2I_S3_IMAGE e2i-s3:local)}"
fi
