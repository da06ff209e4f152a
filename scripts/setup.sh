#!/usr/bin/env bash
# Set up everything Weft needs on a Debian machine with Python 3.11 and Node 20.
# Idempotent and quick when already done: each step keeps a stamp of what it installed.
#   scripts/setup.sh          what `weft serve` needs
#   scripts/setup.sh --dev    plus what the test suite needs
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1

step() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }
stamp_ok() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# --- Debian packages -------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ $(id -u) -eq 0 ]] || die "Debian packages missing: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}"
  if [[ $APT_UPDATED -eq 0 ]]; then
    step "apt-get update"
    apt-get update -qq >&2
    APT_UPDATED=1
  fi
  step "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# --- Python ----------------------------------------------------------------------------
PYTHON=""
for candidate in python3.11 python3.12 python3.13 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2])'; then
    PYTHON=$(command -v "$candidate"); break
  fi
done
[[ -n "$PYTHON" ]] || die "Python 3.11 or newer is required: apt-get install python3.11 python3.11-venv"

if [[ ! -x .venv/bin/python ]]; then
  step "creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv || die "could not create .venv: apt-get install python3.11-venv"
fi
extras=""
[[ $DEV -eq 1 ]] && extras="[dev]"
want="$(hash_of pyproject.toml)$extras"
if ! stamp_ok .venv/.weft-installed "$want"; then
  step "installing Python packages$extras (pip)"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extras" >&2
  echo "$want" > .venv/.weft-installed
fi

# --- npm -------------------------------------------------------------------------------
npm_ci() {
  local dir=$1
  [[ -f "$dir/package-lock.json" ]] || return 0
  command -v npm >/dev/null || die "npm is required (Node 20): apt-get install nodejs npm"
  local want; want=$(hash_of "$dir/package-lock.json")
  if ! stamp_ok "$dir/node_modules/.weft-installed" "$want"; then
    step "installing npm packages in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$want" > "$dir/node_modules/.weft-installed"
  fi
}
npm_ci web
if [[ $DEV -eq 1 ]]; then
  npm_ci tests/js
fi

# --- the web client (web/ -> web/dist, rebuilt only when its sources changed) -----------
bash web/build.sh

# --- Chromium for the browser tests (Debian's: Playwright's own download is not used) --
if [[ $DEV -eq 1 ]]; then
  apt_install chromium
fi

# --- real wheels for the environment tests (tests/support/package_index.py serves them on
# 127.0.0.1; the tests themselves never reach the network) ---------------------------------
TEST_WHEELS=(tabulate==0.10.0)
if [[ $DEV -eq 1 ]] && ! stamp_ok .state/test-wheels/.weft-fetched "${TEST_WHEELS[*]}"; then
  step "fetching test wheels: ${TEST_WHEELS[*]}"
  mkdir -p .state/test-wheels
  .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d .state/test-wheels "${TEST_WHEELS[@]}" >&2 || die "could not download ${TEST_WHEELS[*]}"
  echo "${TEST_WHEELS[*]}" > .state/test-wheels/.weft-fetched
fi

# --- Docker engine and the kernel runtime image ----------------------------------------
# Each workspace's files live on an ext4 image of the quota's size (executor/volumes.py).
if [[ $(id -u) -eq 0 ]]; then
  apt_install e2fsprogs mount
fi
if ! scripts/ensure-runtime-image.sh >/dev/null; then
  if [[ $DEV -eq 1 ]]; then
    die "the Docker engine or the runtime image is not available (see above); the executor tests need both"
  fi
  step "warning: cells cannot run until scripts/ensure-runtime-image.sh succeeds (see above)"
fi

step "ready"
