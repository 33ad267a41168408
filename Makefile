# Two entry points: `make run` (set up and start the service on the bundled demo model) and
# `make test` (set up and run the tests). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: run test lint format demo-data clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# serving needs no torch: `make run` installs only the serve extra
$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[serve]'
	touch $@

$(VENV)/.all: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[train,serve,dev]'
	touch $@ $(VENV)/.serve

run: $(VENV)/.serve
	$(BIN)/python -m server

test: $(VENV)/.all
	$(BIN)/python -m pytest -q

lint: $(VENV)/.all
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.all
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
