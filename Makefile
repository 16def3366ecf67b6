# kontinuum: `make demo` runs the embedded demo, `make test` installs everything and tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test system-deps lint typecheck unit e2e bench clean

$(STAMP): pyproject.toml setup.py proto/generate.py $(wildcard proto/kontinuum/*/*/*.proto)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kontinuum needs Python >= 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	scripts/own-otel-protos.sh $(BIN)/python
	@touch $@

demo: $(STAMP)
	$(BIN)/kontinuum demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Debian packages (a DNS server, dig, ip): apt-get as root, else a clear message.
system-deps:
	scripts/system-deps.sh

test: system-deps lint typecheck
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

e2e: $(STAMP) system-deps
	$(BIN)/python -m pytest tests/e2e

bench: $(STAMP)
	$(BIN)/python -m benchmarks.xds_fanout --streams 1000 --clusters 100 --updates 20 --mode delta

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
