# Xietong — the two set-up commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test bench bench-quick install install-dev clean-var openapi

run: $(VENV)/.installed-run
	$(BIN)/xietong up

test: $(VENV)/.installed-dev
	scripts/ensure-system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-bench
	scripts/ensure-system-deps
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: $(VENV)/.installed-bench
	scripts/ensure-system-deps
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

# Regenerate the checked-in OpenAPI document after changing a route.
openapi: $(VENV)/.installed-dev
	$(BIN)/xietong openapi > docs/openapi.json

install: $(VENV)/.installed-run
install-dev: $(VENV)/.installed-dev

$(VENV)/bin/python:
	scripts/make-venv "$(PYTHON)" "$(VENV)"

$(VENV)/.installed-run: $(VENV)/bin/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-run pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-dev pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev,bench]'
	touch $@

# Removes the embedded database, keys and uploads of `make run` (asks first).
clean-var:
	@read -p "Delete ./var (all local data)? [y/N] " a && [ "$$a" = y ] && rm -rf var || echo kept
