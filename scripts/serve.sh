#!/usr/bin/env bash
# Set up (idempotently) and start Weft on its embedded defaults: http://127.0.0.1:8000
# Extra arguments go to `weft serve` (e.g. --host 0.0.0.0 --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The web client that setup.sh built; set WEFT_WEB_DIR to serve another (or none: "").
export WEFT_WEB_DIR="${WEFT_WEB_DIR-$PWD/web/dist}"
exec .venv/bin/weft serve "$@"
