#!/usr/bin/env bash
# Installs what running sd-webui needs, idempotently and without root:
#   a virtualenv (.venv) with the CPU build of torch first (so diffusers does not pull a CUDA
#   build), the project with its worker, and bun (Reflex builds the page with it) inside .venv.
# Needs Python 3.11+ and Node.js 20+ with npm. `scripts/setup-test.sh` adds the test tooling.
# Usage: scripts/setup.sh [EXTRAS]   (the project's extras, default: worker)
set -euo pipefail
cd "$(dirname "$0")/.."

BUN_VERSION=1.4.5  # the version the Dockerfile's BUN_IMAGE carries

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[${1:-worker}]"

# npm's package ships the binary for this platform; .venv/node_modules/.bin goes on PATH in
# scripts/reflex-env.sh, so no global install (and no root) is needed.
if [ "$(.venv/node_modules/.bin/bun --version 2>/dev/null)" != "$BUN_VERSION" ]; then
  npm install --prefix .venv --no-save --no-audit --no-fund --loglevel=error "bun@$BUN_VERSION"
fi
