# Two entry points: `make run` (set up and start the service on the bundled demo model) and
# `make test` (set up and run the tests). Both create .venv on first use.
# `make test-fast` runs the tests that need no torch; `make lint` runs ruff and mypy.
# torch's version is pinned once, in pyproject.toml's train extra.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast lint format demo-data clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# serving needs no torch: `make run` installs only the serve extra
$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[serve]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[serve,dev]'
	touch $@ $(VENV)/.serve

$(VENV)/.all: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[train,serve,dev]'
	touch $@ $(VENV)/.serve $(VENV)/.dev

run: $(VENV)/.serve
	$(BIN)/python -m server

test: $(VENV)/.all
	$(BIN)/python -m pytest -q

# no torch needed: installs only the serve and dev extras; the test modules marked `torch`
# are not collected (tests/conftest.py)
test-fast: $(VENV)/.dev
	PS_NO_TORCH=1 $(BIN)/python -m pytest -q

lint: $(VENV)/.all
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.all
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
