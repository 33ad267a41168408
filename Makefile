# Two entry points: `make run` (set up and start the service on the bundled demo model) and
# `make test` (set up and run the tests). Both create .venv on first use.
# `make test-fast` runs the tests that need no torch; `make lint` runs ruff and mypy.
# torch's version is pinned once, in pyproject.toml's train extra.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The tests that import neither torch nor the training fixtures (conftest imports torch lazily).
FAST_TESTS := tests/test_evaluate.py tests/test_evaluate_model.py tests/test_loaders.py \
	tests/test_gallery.py tests/test_preprocess.py tests/test_packages.py tests/test_synth.py \
	tests/test_frame_latency.py tests/test_server_browse.py tests/test_http_search.py

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

# no torch needed: installs only the serve and dev extras
test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest -q $(FAST_TESTS)

lint: $(VENV)/.all
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.all
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
