#!/usr/bin/env bash
# Build the kernel runtime image with no registry: a Debian bookworm root filesystem from
# debootstrap, the Python packages added with the host's pip, then `docker import`.
# The image is tagged with a hash of everything that goes into it; when that tag exists
# the build is skipped. Prints the image reference as its last line.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
started=$SECONDS
step() { printf '[runtime %3ds] %s\n' $((SECONDS - started)) "$*" >&2; }
die() { printf '[runtime] error: %s\n' "$*" >&2; exit 1; }

inputs=(infra/runtime/requirements.txt infra/runtime/build-offline.sh infra/runtime/Dockerfile executor/runner.py)
tag=$(cat "${inputs[@]}" | sha256sum | cut -c1-12)
image="weft-runtime:$tag"
if docker image inspect "$image" >/dev/null 2>&1; then
  docker tag "$image" weft-runtime:latest
  step "up to date: $image"
  echo "$image"
  exit 0
fi

[[ $(id -u) -eq 0 ]] || die "building the image offline needs root (debootstrap, chroot); run as root or build with the Dockerfile where a registry is reachable"
command -v debootstrap >/dev/null || {
  step "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2 || die "apt-get install debootstrap failed"
}
PY=""
for candidate in python3.11 "$ROOT/.venv/bin/python"; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    PY=$candidate; break
  fi
done
[[ -n "$PY" ]] || PY=python3

work="${WEFT_STATE_DIR:-.state}/runtime-build"
rm -rf "$work"
mkdir -p "$work"
rootfs="$(cd "$work" && pwd)/rootfs"
mirror=${WEFT_DEBIAN_MIRROR:-http://deb.debian.org/debian}

step "debootstrap bookworm (python3) from $mirror; about 2 minutes"
debootstrap --variant=minbase --include=python3,python3-minimal,ca-certificates,libgomp1,libstdc++6 \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || die "debootstrap failed; see $work/debootstrap.log"

step "pip: $(grep -v '^#' infra/runtime/requirements.txt | tr '\n' ' ')"
site="$rootfs/usr/local/lib/python3.11/dist-packages"
mkdir -p "$site"
"$PY" -m pip install --quiet --disable-pip-version-check --no-compile --target "$site" \
  --no-warn-conflicts --ignore-installed --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -r infra/runtime/requirements.txt >&2 || die "pip could not fetch the runtime packages"

step "user, runner, cleanup"
chroot "$rootfs" useradd --uid 1000 --create-home --shell /usr/sbin/nologin weft
mkdir -p "$rootfs/opt/weft" "$rootfs/workspace"
chroot "$rootfs" chown weft:weft /workspace
install -m 0644 executor/runner.py "$rootfs/opt/weft/runner.py"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/info/*
find "$rootfs" -name __pycache__ -type d -prune -exec rm -rf {} +
# Bytecode for the standard library and the packages, by the image's own interpreter: the
# root filesystem is read-only in a kernel, so without it every `import sklearn` compiles
# thousands of files again (~10 s), and the runner's own start (ast, typing, enum, re,
# importlib.abc: the stdlib's bytecode went with the __pycache__ folders above) took
# ~300 ms of every cold start (docs/performance.md, "Run overhead").
step "compiling the standard library's and the packages' bytecode"
compile=(chroot "$rootfs" python3 -m compileall -q /usr/lib/python3.11 /usr/local/lib/python3.11/dist-packages)
# In parallel where the chroot allows it (process pools need POSIX semaphores), else serially.
# A file that does not compile (a template, a test for another Python) only stays uncompiled.
"${compile[@]}" -j 0 >/dev/null 2>&1 || "${compile[@]}" >/dev/null 2>&1 || true

step "docker import $image"
tar -C "$rootfs" -c . | docker import \
  --change 'USER weft' \
  --change 'WORKDIR /workspace' \
  --change 'ENV MPLBACKEND=Agg PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp' \
  --change 'CMD ["python3", "-u", "/opt/weft/runner.py"]' \
  - "$image" >/dev/null || die "docker import failed"
docker tag "$image" weft-runtime:latest
rm -rf "$work"
# Keep the three most recent builds (this one and two older): other worktrees and servers
# may still start kernels from an older tag. Older ones are only disk: drop their tags
# (layers still used are kept by docker). `docker images` lists the newest first.
docker images --format '{{.Repository}}:{{.Tag}}' weft-runtime \
  | grep -v -e ":latest$" -e ":$tag$" | tail -n +3 | xargs -r docker rmi >/dev/null 2>&1 || true
step "built $image ($(docker image inspect "$image" --format '{{.Size}}' | awk '{printf "%d MB", $1/1e6}'))"
echo "$image"
