# Two commands do all setup on a fresh machine: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: run test test-fast venv serve bench bench-keras clean data-package chromium-package

# The virtual environment with pinned dependencies; torch==2.13.0 is the CPU wheel on this
# machine's disk (a looser pin would pull a multi-GB CUDA build).
$(STAMP): pyproject.toml requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# System packages, installed when missing and we may (root with apt): the real data, and
# Debian's Chromium for the browser tests. Without them convlens looks elsewhere for the
# data (--data-dir, $$CONVLENS_DATA, the cache, a verified download) and says what to do.
data-package:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist; fi

chromium-package:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; fi

# The main job: train the seed model on Fashion-MNIST and say where the run went.
run: $(STAMP) data-package
	$(BIN)/convlens data
	$(BIN)/convlens train

# The web explorer over runs/ on http://localhost:8000/ (Ctrl-C stops it).
serve: $(STAMP) data-package
	$(BIN)/convlens serve

test: $(STAMP) data-package chromium-package
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
