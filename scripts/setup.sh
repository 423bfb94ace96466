#!/usr/bin/env bash
# Installs everything sd-webui needs on a fresh Debian machine, idempotently:
#   system packages (Chromium for browser tests, tcmalloc), bun for Reflex's frontend build,
#   a virtualenv with the CPU build of torch first (so diffusers does not pull a CUDA build),
#   then the project with its worker and test extras.
# Usage: scripts/setup.sh [--no-browser]
set -euo pipefail
cd "$(dirname "$0")/.."

with_browser=1
[ "${1:-}" = "--no-browser" ] && with_browser=0

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_packages=()
[ "$with_browser" = 1 ] && ! command -v chromium >/dev/null && apt_packages+=(chromium)
[ -e /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 ] || [ -e /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4 ] || apt_packages+=(libgoogle-perftools4)
# The deploy tests run the compose proxy's nginx config; the replica tests start Redis servers.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_packages+=(nginx-light)
command -v redis-server >/dev/null || apt_packages+=(redis-server)
if [ "${#apt_packages[@]}" -gt 0 ]; then
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_packages[@]}"
fi

if ! command -v bun >/dev/null; then
  as_root npm install -g --allow-scripts=bun bun 2>/dev/null || as_root npm install -g bun
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[worker,test]'
