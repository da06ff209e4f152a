#!/usr/bin/env bash
# Set up (idempotently) and run every check: ruff, mypy, then the whole pytest suite.
# Extra arguments go to pytest (e.g. -k sync -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
echo "[test] ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "[test] mypy" >&2
.venv/bin/mypy
echo "[test] pytest" >&2
exec .venv/bin/python -m pytest "$@"
