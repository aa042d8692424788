# The two commands of the README's quick start: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,tensorflow,loadtest

.PHONY: setup system-deps serve test lint protos bench clean

setup: $(VENV)/.installed system-deps

# Debian packages the tests and benchmarks use: a real redis-server, and wrk as load generator.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@command -v redis-server >/dev/null && command -v wrk >/dev/null || \
		( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server wrk )

# Re-run pip only when the declared dependencies change.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

serve: setup
	$(BIN)/mdeploy serve --demo

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
	$(BIN)/python -m loadtests.bench_gateway

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
