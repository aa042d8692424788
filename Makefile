# The two commands of the README's quick start: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,tensorflow,loadtest

.PHONY: setup serve test lint protos bench clean

setup: $(VENV)/.installed

# Re-run pip only when the declared dependencies change.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

serve: setup
	$(BIN)/python -m examples.serve_demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

protos: setup
	$(BIN)/python -m protos.generate

bench: setup
	$(BIN)/python -m loadtests.bench_server

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
