# shopimind-connector — developer entry points. Needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
DEMO_DIR ?= .demo

.PHONY: venv demo test lint typecheck unit soak bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make demo: build the SQLite demo shop, start the local sandbox, sync, change rows, sync again
demo: $(STAMP)
	$(PY) -m connector.demo --dir $(DEMO_DIR)

## make test: lint, type-check and run the whole suite
test: $(STAMP) lint typecheck
	$(PY) -m pytest -q --ignore=tests/benchmarks $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check connector tests
	$(BIN)/ruff format --check connector tests

typecheck: $(STAMP)
	$(BIN)/mypy --strict connector

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

## make soak: the long soak variants of the change-capture tests (not part of make test)
soak: $(STAMP)
	$(PY) -m pytest -q --soak -m slow tests/e2e $(PYTEST_ARGS)

## make bench: benchmark suite (not part of make test); writes BENCHMARKS.md. Uses PostgreSQL and
## MariaDB when SHOPIMIND_TEST_POSTGRES_URL / SHOPIMIND_TEST_MYSQL_URL are set; BENCH_ARGS=--quick
## for a small first look (written to .bench/BENCHMARKS-quick.md)
bench: $(STAMP)
	$(PY) -m pytest -q tests/benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
