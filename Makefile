# Two entry points: `make run` (the main job) and `make test` (the test suite).
# Each creates .venv with Python 3.11 and installs what it needs.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test lint install install-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

run: install
	$(BIN)/lstm-forecast run --preset default $(ARGS)

test: install-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(ARGS)

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
