# Two commands do all setup on a fresh machine: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: run test test-fast venv bench bench-keras clean

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

# The speed benchmark (benchmarks/RESULTS.md). The seed's Keras code needs TensorFlow, kept in
# its own environment so that it never touches the one the tests use.
bench: $(STAMP)
	$(BIN)/convlens bench

bench-keras:
	$(PY) -m venv .venv-keras
	.venv-keras/bin/pip install --quiet --disable-pip-version-check tensorflow-cpu==2.21.0

clean:
	rm -rf $(VENV) .venv-keras build *.egg-info src/*.egg-info .pytest_cache
