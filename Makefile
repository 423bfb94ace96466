# sd-webui: `make run` (the product on its embedded default), `make test` (everything CI runs).
SHELL := /bin/bash
BIN := .venv/bin
ENV := source scripts/reflex-env.sh &&
DEMO_MODEL := .cache/demo-model
PORT ?= 3000
# tcmalloc makes CPU inference faster (docs/performance.md); preloaded when it is installed
# (Debian: `apt-get install libgoogle-perftools4`), skipped when it is not.
TCMALLOC := $(firstword $(wildcard /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4))
# TBB_ENABLE_SANITIZERS=1 keeps OpenVINO (SD_BACKEND=openvino) from aborting under tcmalloc.
PRELOAD := $(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC) TBB_ENABLE_SANITIZERS=1)
SERVE := $(BIN)/reflex run --env prod --single-port --frontend-port $(PORT)

.PHONY: install install-test run demo-model demo worker test screenshots lint format bench

install:  ## what running needs, no root: .venv with torch (CPU), the project and its worker, bun
	scripts/setup.sh

install-test:  ## `install`, the test extras, and Chromium, nginx, Redis, tcmalloc from apt
	scripts/setup-test.sh

run: install  ## the web app with its embedded queue and worker (no AMQP_URL) on http://localhost:$(PORT)
	$(ENV) $(PRELOAD) $(SERVE)

demo-model: install  ## a tiny random model folder, for trying the whole loop offline
	$(BIN)/sd-demo-model $(DEMO_MODEL)

demo: demo-model  ## `make run` on the tiny offline model: noise images, but the real pipeline
	$(ENV) SD_MODEL=$(DEMO_MODEL) $(PRELOAD) $(SERVE)

worker: install  ## one worker against $$AMQP_URL
	$(PRELOAD) $(BIN)/sd-worker

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install-test lint  ## installs everything, then lint and the whole test suite
	$(ENV) $(BIN)/pytest

screenshots: install-test  ## the browser tests, saving their screenshots into docs/; then assets/
	$(ENV) SCREENSHOT_DIR=docs $(BIN)/pytest tests/web/test_web_browser.py tests/e2e/test_job_status.py
	$(BIN)/python -m scripts.render_assets

bench: install-test
	$(BIN)/python bench/gallery.py
	$(BIN)/python bench/worker.py
	$(BIN)/python bench/inference.py
	$(BIN)/python bench/model_load.py
	$(BIN)/python bench/events.py
	$(BIN)/python bench/api.py
	$(ENV) $(BIN)/python bench/push.py
