# shellcheck shell=bash
# Sourced by the Makefile: Reflex uses the bun scripts/setup.sh put in .venv and the configured
# npm registry, no telemetry.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$_root/.venv/node_modules/.bin:$PATH"
unset _root
export REFLEX_USE_SYSTEM_BUN=1
export REFLEX_TELEMETRY_ENABLED=false
NPM_CONFIG_REGISTRY="$(npm config get registry 2>/dev/null || true)"
export NPM_CONFIG_REGISTRY
export HF_HUB_DISABLE_TELEMETRY=1
