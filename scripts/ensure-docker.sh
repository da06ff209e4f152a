#!/usr/bin/env bash
# Make sure a Docker engine answers: install Debian's docker.io and start dockerd when none
# does. Idempotent; a second call returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[docker] %s\n' "$*" >&2; }

docker_answers() { docker info >/dev/null 2>&1 || docker -H unix:///var/run/docker.sock version >/dev/null 2>&1; }

if command -v docker >/dev/null && docker_answers; then
  exit 0
fi
if ! command -v dockerd >/dev/null; then
  [[ $(id -u) -eq 0 ]] || { say "error: no Docker engine; install one (sudo apt-get install docker.io) or run this as root"; exit 1; }
  say "installing Debian's docker.io"
  if ! apt-cache policy docker.io 2>/dev/null | grep -q Candidate; then apt-get update -qq >&2; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >&2
fi
[[ $(id -u) -eq 0 ]] || { say "error: dockerd is installed but not running; start it (sudo systemctl start docker)"; exit 1; }

state=${WEFT_STATE_DIR:-.state}
mkdir -p "$state"
log="$(cd "$state" && pwd)/dockerd.log"
say "starting dockerd (log: $log)"
# Its own session: the engine outlives the shell (and the process group) that started it.
setsid nohup dockerd >"$log" 2>&1 < /dev/null &
for _ in $(seq 1 120); do
  if docker_answers; then
    say "engine ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    exit 0
  fi
  sleep 0.5
done
say "error: dockerd did not answer within 60 s; see $log (a storage-driver error there can be fixed with: dockerd --storage-driver=vfs)"
exit 1
