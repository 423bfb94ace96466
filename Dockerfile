# syntax=docker/dockerfile:1.7
# sd-webui container images, one file, two targets:
#
#   docker build --target webui  -t sd-webui/webui:0.1.0  .
#   docker build --target worker -t sd-webui/worker:0.1.0 .
#   docker build --target worker -t sd-webui/worker:0.1.0-cuda \
#       --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 .
#
# Build arguments:
#   BASE_IMAGE       runtime base of both targets: a Debian or Ubuntu image whose apt has
#                    python3 >= 3.11 (default: Debian bookworm slim). For GPU workers, a CUDA
#                    runtime image; it also sets the NVIDIA_* variables the NVIDIA container
#                    runtime reads.
#   TORCH_INDEX_URL  the wheel index torch (pinned in pyproject.toml) is installed from. Empty:
#                    PyPI, whose Linux x86-64 wheel bundles the CUDA libraries (runs on CPU and
#                    GPU, some GB larger). Point it at the PyTorch CPU wheel index for a small
#                    CPU-only worker image; compose passes it through from `.env`.
#   PIP_INDEX_URL, NPM_CONFIG_REGISTRY
#                    package mirrors, for builds that must not reach the public registries.
#   BUN_IMAGE        the image the bun binary is copied from (Reflex builds the frontend with it).
#
# Both targets run under tini as the unprivileged user `app` (numeric uid 10001, so Kubernetes'
# runAsNonRoot can check it), with images in /data/images (IMAGES_DIR); the worker keeps the
# model cache in the volume /data/hf (HF_HOME).

ARG BASE_IMAGE=debian:bookworm-slim
ARG BUN_IMAGE=oven/bun:1.4.5-slim

FROM ${BUN_IMAGE} AS bun

# ---- base: python3, tini and the unprivileged user, shared by both targets -----------------
FROM ${BASE_IMAGE} AS base
ARG DEBIAN_FRONTEND=noninteractive
# Unpinned apt packages: the base image's release pins them; exact versions would break rebuilds
# each time the archive moves on.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app \
    && mkdir -p /data/images /data/hf \
    && chown app:app /data/images /data/hf
LABEL org.opencontainers.image.title="sd-webui" \
      org.opencontainers.image.description="Self-hosted Stable Diffusion: Reflex web app, RabbitMQ jobs, diffusers workers"
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IMAGES_DIR=/data/images
WORKDIR /app
# tini forwards SIGTERM to the whole process group (Reflex starts its server as a child) and
# reaps what bun leaves behind.
ENTRYPOINT ["/usr/bin/tini", "-g", "--"]

# ---- build: the virtual environment, dependencies in their own cached layer ----------------
FROM base AS build
ARG PIP_INDEX_URL
# pip downloads go to the BuildKit cache mount below, never into a layer (HOME is the app
# user's here, so the cache is named explicitly).
ENV PIP_CACHE_DIR=/root/.cache/pip
RUN python3 -m venv /opt/venv
COPY deploy/docker/requirements.py /build/requirements.py
COPY pyproject.toml README.md ./

FROM build AS webui-build
ARG NPM_CONFIG_REGISTRY
COPY --from=bun /usr/local/bin/bun /usr/local/bin/bun
RUN --mount=type=cache,target=/root/.cache/pip \
    python /build/requirements.py > /build/requirements.txt \
    && pip install -r /build/requirements.txt
# The app's whole source: rxconfig.py, sd_webui/, assets/ (what .dockerignore allows).
COPY . .
ENV REFLEX_USE_SYSTEM_BUN=1 \
    REFLEX_TELEMETRY_ENABLED=false
# Compile the app and build the frontend now: the npm packages land in the image, so the
# container starts without network access, and a broken page fails the build, not the rollout.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
    && reflex export --frontend-only --no-zip --env prod

FROM build AS worker-build
ARG TORCH_INDEX_URL
# torch first, from TORCH_INDEX_URL when given; the rest then finds it installed.
RUN --mount=type=cache,target=/root/.cache/pip \
    python /build/requirements.py --extra worker --only torch > /build/torch.txt \
    && pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} -r /build/torch.txt \
    && python /build/requirements.py --extra worker --except torch > /build/requirements.txt \
    && pip install -r /build/requirements.txt
COPY sd_webui ./sd_webui
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps .

# ---- webui: the Reflex app, frontend and backend on one port --------------------------------
FROM base AS webui
COPY --from=bun /usr/local/bin/bun /usr/local/bin/bun
COPY --from=webui-build /opt/venv /opt/venv
# Reflex writes into its project folder at start (.web, its state and lock files).
COPY --from=webui-build --chown=app:app /app /app
ENV REFLEX_USE_SYSTEM_BUN=1 \
    REFLEX_TELEMETRY_ENABLED=false
USER 10001:10001
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=5m --retries=3 \
    CMD ["python3", "-c", "import urllib.request as r; r.urlopen('http://127.0.0.1:3000/readyz', timeout=4)"]
# `--env prod --single-port`: the optimised frontend and the backend on port 3000 in one
# process. Reflex 0.10.1 re-runs the (cached, offline) frontend build when it starts, so
# REFLEX_API_URL set at run time still reaches the page.
CMD ["reflex", "run", "--env", "prod", "--single-port", "--backend-host", "0.0.0.0", "--frontend-port", "3000"]

# ---- worker: consume `tasks`, generate with diffusers, write images -------------------------
FROM base AS worker
ARG DEBIAN_FRONTEND=noninteractive
# tcmalloc cuts the allocator overhead of torch on CPU. The package is called
# libtcmalloc-minimal4t64 on Ubuntu 24.04 and later Debian.
# hadolint ignore=DL3008
RUN apt-get update \
    && (apt-get install -y --no-install-recommends libtcmalloc-minimal4 \
        || apt-get install -y --no-install-recommends libtcmalloc-minimal4t64) \
    && rm -rf /var/lib/apt/lists/*
COPY --from=worker-build /opt/venv /opt/venv
# A bare soname in LD_PRELOAD is looked up in the loader's paths, so this is right on every
# architecture; the check below fails the build if it does not resolve (at run time the loader
# would only print a warning).
# TBB_ENABLE_SANITIZERS: OpenVINO's oneTBB loads its hwloc binding with RTLD_DEEPBIND, which
# under a preloaded tcmalloc aborts at start ("free(): invalid pointer"); this turns that off.
ENV LD_PRELOAD=libtcmalloc_minimal.so.4 \
    TBB_ENABLE_SANITIZERS=1 \
    TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=17179869184 \
    HF_HOME=/data/hf \
    HF_HUB_DISABLE_TELEMETRY=1 \
    METRICS_PORT=9100
RUN grep -q libtcmalloc_minimal /proc/self/maps
USER 10001:10001
VOLUME ["/data/hf"]
EXPOSE 9100
# Ready means the model is loaded and the worker consumes; the first start downloads the model.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m --retries=3 \
    CMD ["python3", "-c", "import urllib.request as r; r.urlopen('http://127.0.0.1:9100/readyz', timeout=4)"]
CMD ["sd-worker"]
