# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install vqvp, run the end-to-end pipeline on the tiny preset
#               (make demo PRESET=tiny-long: the same models at a ~1 h CPU budget, README 'Results')
#   make test   install the test dependencies too, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Pinned first so pip never resolves torch to a multi-GB CUDA build on CPU machines;
# set TORCH=torch (or a CUDA wheel spec) on GPU machines.
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=
PRESET ?= tiny

.PHONY: demo test test-fast install clean-venv bench

$(BIN)/vqvp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-deps: $(BIN)/vqvp
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/vqvp

demo: $(BIN)/vqvp
	$(BIN)/vqvp run --preset $(PRESET)

test: $(VENV)/.test-deps
	bash scripts/system-deps.sh
	$(BIN)/python -m pytest --durations=40 $(PYTEST_ARGS)

# the developers' set: everything but the tests marked slow (containers, whole flows, kills)
test-fast: $(VENV)/.test-deps
	bash scripts/system-deps.sh
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(BIN)/vqvp
	$(BIN)/python bench/ingest.py

clean-venv:
	rm -rf $(VENV)
