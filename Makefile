# make demo: set up .venv and run the demo.  make test: set up .venv, run make lint, then the fast tests.
# make lint: ruff (lint and format check) on src and tests, mypy on src/labelwise (the package ships py.typed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo lint test test-slow bench clean nnunet-env

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, from the pin, so nothing pulls a CUDA build; then the package with its dev extras.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt torch
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/labelwise demo

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/engine_overhead.py

clean:
	rm -rf $(VENV) runs test-artifacts

# nnU-Net v2 as a benchmark peer (benchmarks/nnunet_drive.py), in its own venv: nnunetv2 is never a
# labelwise dependency. torch first, from the repo's pin (the CPU wheel), then nnunetv2 with its own pins.
NNUNET_VENV := .venv-nnunet
NNUNET_STAMP := $(NNUNET_VENV)/.installed

$(NNUNET_STAMP): constraints.txt benchmarks/nnunet-constraints.txt
	test -x $(NNUNET_VENV)/bin/python || $(PYTHON) -m venv $(NNUNET_VENV)
	$(NNUNET_VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints.txt torch
	$(NNUNET_VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -c benchmarks/nnunet-constraints.txt nnunetv2
	touch $(NNUNET_STAMP)

nnunet-env: $(NNUNET_STAMP)
