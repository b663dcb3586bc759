# ATRA — make targets. `make demo` and `make test` work on a fresh clone (Python 3.11, pip, make;
# `make test` also installs Prometheus and Chromium from Debian, as root or with passwordless sudo).
# Every pip install is pinned by constraints.txt (`make lock` regenerates it).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?=
CONSTRAINTS := constraints.txt
PIP_INSTALL := $(BIN)/python -m pip install --quiet -c $(CONSTRAINTS)
# mkdocs-material prints a multi-line banner about MkDocs 2.0 on every build unless this is set
export NO_MKDOCS_2_WARNING := 1

.PHONY: demo test test-fast test-deps check lint typecheck docs lock lock-check bench clean venv dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(PIP_INSTALL) -e .
	touch $@

# dev tools and the docs toolchain (tools/gen_ref.py is linted, type-checked and tested)
$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml $(CONSTRAINTS)
	$(PIP_INSTALL) -e '.[dev,docs]'
	touch $@

venv: $(VENV)/.installed
dev: $(VENV)/.installed-dev

## demo: run the main job on the embedded synthetic data (DATA=../shared/data for real data)
demo: $(VENV)/.installed
	$(BIN)/atra demo $(if $(DATA),--data $(DATA),)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy
	$(BIN)/mypy tools

## test-deps: the real services the integration tests use (Prometheus, Chromium); installs
## them when absent, or fails naming the one command to run (not root / no apt-get)
test-deps:
	bash .ci/install-prometheus.sh
	bash .ci/install-chromium.sh

## test: lint, type-check, and the whole test suite with the 90% coverage gate, one pytest
## worker per core (pytest-xdist; whole files per worker, so a module's fixtures run once)
test: test-deps lint typecheck
	$(BIN)/python -m pytest -n auto --dist loadfile --cov=atra --cov-report=term -p no:cacheprovider
	@echo "coverage gate: fail_under=90 (pyproject.toml)"

## test-fast: the unit tests only, no lint, no coverage gate (the inner loop)
test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

check: test

## docs: the documentation site into site/ (any warning fails the build)
docs: $(VENV)/.installed-dev
	$(BIN)/mkdocs build --strict

## lock: regenerate constraints.txt from a fresh, unpinned install of .[dev,docs]
lock:
	@set -eu; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install --quiet -e '.[dev,docs]'; \
	"$$tmp/venv/bin/python" tools/lock.py --write $(CONSTRAINTS)

## lock-check: the lock still resolves against the package index, and pins every dependency
lock-check: $(VENV)/.installed-dev
	$(BIN)/python -m pip install --dry-run --ignore-installed --quiet -c $(CONSTRAINTS) -e '.[dev,docs]'
	$(BIN)/python tools/lock.py --check $(CONSTRAINTS)

## bench: the benchmarks (print figures; not part of make test)
BENCH_DATA ?= /tmp/atra-bench
bench: $(VENV)/.installed-dev
	$(PIP_INSTALL) -e '.[bench]'
	test -d $(BENCH_DATA)/small || $(BIN)/python ../shared/bench/gen_data.py --size small
	test -d $(BENCH_DATA)/large || $(BIN)/python ../shared/bench/gen_data.py --size large
	$(BIN)/python bench/bench_store_load.py
	$(BIN)/python bench/bench_features.py
	$(BIN)/python bench/bench_labels.py --data $(BENCH_DATA)/small
	$(BIN)/python bench/bench_backtest.py --data $(BENCH_DATA)/large
	$(BIN)/python bench/bench_download.py
	$(BIN)/python bench/bench_meta.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage* htmlcov site
