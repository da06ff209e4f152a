#!/usr/bin/env bash
# Set up (idempotently) and start Weft on its embedded defaults: http://127.0.0.1:8000
# Extra arguments go to `weft serve` (e.g. --host 0.0.0.0 --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/weft serve "$@"
