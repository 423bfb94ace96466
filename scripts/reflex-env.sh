# Sourced by the Makefile: Reflex uses the system bun and the configured npm registry, no telemetry.
export REFLEX_USE_SYSTEM_BUN=1
export REFLEX_TELEMETRY_ENABLED=false
NPM_CONFIG_REGISTRY="$(npm config get registry 2>/dev/null || true)"
export NPM_CONFIG_REGISTRY
export HF_HUB_DISABLE_TELEMETRY=1
