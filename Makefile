# The two commands of the README's quick start: `make serve` and `make test`.
# `make serve GPU=1` (or `make test GPU=1`) sets the venv up with the GPU runtime instead.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,tensorflow,loadtest
# The inference runtime: the CPU wheel by default, onnxruntime-gpu (CUDA 13) with GPU=1.
# Both wheels provide the `onnxruntime` module: when the other one is there, both go (its removal
# would delete files they share), and the install below puts back the right one alone.
RUNTIME := $(if $(GPU),gpu,cpu)
RUNTIME_WHEEL := $(if $(GPU),onnxruntime-gpu,onnxruntime)
OTHER_RUNTIME_WHEEL := $(if $(GPU),onnxruntime,onnxruntime-gpu)
STAMP := $(VENV)/.installed-$(RUNTIME)

.PHONY: setup system-deps serve test scale-test lint protos bench clean

setup: $(STAMP) system-deps

# Debian packages the tests and benchmarks use: a real redis-server, PostgreSQL (the database
# for several hosts; tests start their own cluster), wrk as load generator, and Chromium with its
# chromedriver for the console's browser tests (tests/e2e/console/).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@command -v redis-server >/dev/null && command -v wrk >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && \
		command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server wrk postgresql chromium chromium-driver )

# Re-run pip only when the declared dependencies or the runtime change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	! $(BIN)/python -m pip show --quiet $(OTHER_RUNTIME_WHEEL) 2>/dev/null || \
		$(BIN)/python -m pip uninstall --quiet --yes $(OTHER_RUNTIME_WHEEL) $(RUNTIME_WHEEL)
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS),$(RUNTIME)]'
	rm -f $(VENV)/.installed*
	touch $@

serve: setup
	$(BIN)/mdeploy serve --demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q

# The whole multi-host test: hosts as Linux network namespaces (root only), every scenario with
# longer windows; `make test` (CI) runs its reduced set. -s shows each scenario's MULTIHOST line.
scale-test: setup
	MDEPLOY_SCALE_TEST=1 $(BIN)/python -m pytest -v -s tests/e2e/test_multihost.py

protos: setup
	$(BIN)/python -m protos.generate

bench: setup
	$(BIN)/python -m loadtests.server.bench_server
	$(BIN)/python -m loadtests.gateway.bench_gateway

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
