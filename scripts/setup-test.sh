#!/usr/bin/env bash
# Everything `make test` needs, on top of scripts/setup.sh: Debian's Chromium (browser tests),
# nginx (the compose proxy's config is run), redis-server (replica tests start their own) and
# tcmalloc (the tests run `make run`, which preloads it when present), then the test extras.
# These need root or sudo for apt-get, once.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_packages=()
command -v chromium >/dev/null || apt_packages+=(chromium)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_packages+=(nginx-light)
command -v redis-server >/dev/null || apt_packages+=(redis-server)
compgen -G '/usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4' >/dev/null \
  || apt_packages+=(libgoogle-perftools4)
if [ "${#apt_packages[@]}" -gt 0 ]; then
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_packages[@]}"
fi

scripts/setup.sh worker,test
