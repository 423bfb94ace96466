# sd-webui: `make run` (the product on its embedded default), `make test` (everything CI runs).
SHELL := /bin/bash
BIN := .venv/bin
REFLEX := source scripts/reflex-env.sh && $(BIN)/reflex
DEMO_MODEL := .cache/demo-model
PORT ?= 3000

.PHONY: install run demo-model demo worker test screenshots lint format bench

install:  ## venv, torch (CPU), the project, bun, Chromium
	scripts/setup.sh

run: install  ## the web app with its embedded queue and worker (no AMQP_URL) on http://localhost:$(PORT)
	$(REFLEX) run --env prod --single-port --frontend-port $(PORT)

demo-model: install  ## a tiny random model folder, for trying the whole loop offline
	$(BIN)/sd-demo-model $(DEMO_MODEL)

demo: demo-model  ## `make run` on the tiny offline model: noise images, but the real pipeline
	SD_MODEL=$(DEMO_MODEL) $(REFLEX) run --env prod --single-port --frontend-port $(PORT)

worker: install  ## one worker against $$AMQP_URL
	$(BIN)/sd-worker

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install lint  ## installs everything, then lint and the whole test suite
	source scripts/reflex-env.sh && $(BIN)/pytest

screenshots: install  ## the browser tests, saving their screenshots into docs/
	source scripts/reflex-env.sh && SCREENSHOT_DIR=docs $(BIN)/pytest tests/web/test_web_browser.py tests/e2e/test_job_status.py

bench: install
	$(BIN)/python bench/gallery.py
	$(BIN)/python bench/worker.py
	$(BIN)/python bench/inference.py
	$(BIN)/python bench/events.py
	$(BIN)/python bench/api.py
	source scripts/reflex-env.sh && $(BIN)/python bench/push.py
