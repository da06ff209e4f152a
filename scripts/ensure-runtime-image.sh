#!/usr/bin/env bash
# Make sure the kernel runtime image exists (weft-runtime:latest): offline from Debian
# packages by default; WEFT_RUNTIME_BUILD=dockerfile builds infra/runtime/Dockerfile instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-docker.sh
if [[ "${WEFT_RUNTIME_BUILD:-offline}" == "dockerfile" ]]; then
  docker build -t weft-runtime:latest -f infra/runtime/Dockerfile . >&2
  echo weft-runtime:latest
else
  bash infra/runtime/build-offline.sh
fi
