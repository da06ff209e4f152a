#!/usr/bin/env bash
# Build the web client into web/dist (served by `weft serve` at /) when its sources changed
# since the last build; a quick no-op otherwise. Needs web/node_modules (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")"
sources_hash() {
  find index.html frame.html vite.config.js package.json package-lock.json build.sh src -type f -print0 \
    | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
}
want=$(sources_hash)
if [[ -f dist/index.html && -f dist/.weft-build && "$(cat dist/.weft-build)" == "$want" ]]; then
  exit 0
fi
if [[ ! -x node_modules/.bin/vite ]]; then
  echo "[web] web/node_modules is missing: run scripts/setup.sh" >&2
  exit 1
fi
echo "[web] building the client into web/dist" >&2
node_modules/.bin/vite build --logLevel warn >&2
echo "$want" > dist/.weft-build
