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
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: install run test lint services-up services-down bench clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all]'
	touch $@

run: install
	$(VENV)/bin/vividflow serve --host $(HOST) --port $(PORT)

# Runs against the private PostgreSQL and Redis of scripts/test-services.sh, left running afterwards
# for the next run (`make services-down` stops them).
test: install services-up
	eval "$$($(SERVICES) env)"; $(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory lint

lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy vividflow

services-up:
	$(SERVICES) up

services-down:
	$(SERVICES) down

bench: install services-up
	eval "$$($(SERVICES) env)"; shopt -s nullglob; scripts=(bench/*.py); \
	(( $${#scripts[@]} )) || echo "bench: no bench/*.py yet"; \
	for script in "$${scripts[@]}"; do echo "== $$script"; $(PY) "$$script"; done

# Build outputs and tool caches; keeps .venv (pip's cache makes a reinstall fast: rm -rf .venv)
# and .vividflow/ (embedded mode's jobs and results).
clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
