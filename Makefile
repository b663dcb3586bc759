# ATRA — make targets. `make demo` and `make test` work on a fresh clone (Python 3.11, pip, make).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?=

.PHONY: demo test check lint typecheck bench clean venv dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed
dev: $(VENV)/.installed-dev

## demo: run the main job on the embedded synthetic data (DATA=../shared/data for real data)
demo: $(VENV)/.installed
	$(BIN)/atra demo $(if $(DATA),--data $(DATA),)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

## test: lint, type-check, and the whole test suite with the 90% coverage gate
test: lint typecheck
	$(BIN)/python -m pytest --cov=atra --cov-report=term -p no:cacheprovider
	@echo "coverage gate: fail_under=90 (pyproject.toml)"

check: test

## bench: the benchmarks (print figures; not part of make test)
BENCH_DATA ?= /tmp/atra-bench
bench: $(VENV)/.installed-dev
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	test -d $(BENCH_DATA)/small || $(BIN)/python ../shared/bench/gen_data.py --size small
	test -d $(BENCH_DATA)/large || $(BIN)/python ../shared/bench/gen_data.py --size large
	$(BIN)/python bench/bench_store_load.py
	$(BIN)/python bench/bench_features.py
	$(BIN)/python bench/bench_labels.py --data $(BENCH_DATA)/small
	$(BIN)/python bench/bench_backtest.py --data $(BENCH_DATA)/large
	$(BIN)/python bench/bench_download.py
	$(BIN)/python bench/bench_meta.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage* htmlcov
