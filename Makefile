# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: demo test lint unit integration bench server clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check sagestack tests bench tools examples

test: $(STAMP) lint
	bash tools/install_browser.sh
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) tests

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) tests/integration

demo: $(STAMP)
	$(BIN)/python examples/demo.py

bench: $(STAMP)
	$(BIN)/python bench/control_plane.py

server: $(STAMP)
	$(BIN)/sagestack server

clean:
	rm -rf $(VENV) .sagestack demo-output .pytest_cache .ruff_cache
