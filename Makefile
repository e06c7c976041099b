# Two commands do all setup on a fresh machine: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: run test test-fast venv bench clean

# The virtual environment with pinned dependencies; torch==2.13.0 is the CPU wheel on this
# machine's disk (a looser pin would pull a multi-GB CUDA build).
$(STAMP): pyproject.toml requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# The main job: train the seed model on Fashion-MNIST and say where the run went.
run: $(STAMP)
	$(BIN)/convlens data
	$(BIN)/convlens train

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/convlens bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
