# Quick start: `make bench` (a quick sweep, on the GPU if there is one) and `make test`.
# `make test-gpu`: the GPU suite (tests/gpu), kernels compiled and timing engines, on a CUDA GPU.
# Each sets up .venv on first use. The venv sees the system's packages, so an installed torch
# (a CUDA build on a GPU machine) is kept; a CPU build is installed only where none is present.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup bench test test-gpu clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -c constraints.txt -e '.[test]'
	touch $(STAMP)

bench: setup
	$(VENV)/bin/quantbench run configs/quick.yaml

test: setup
	$(PY) -m pytest

# The GPU suite. On a machine whose Python already has every dependency and no package registry
# (a GPU box), skip the venv: `make test-gpu PY=python3` (the project installed there with
# `pip install -e . --no-deps --no-build-isolation`).
test-gpu: $(if $(filter $(VENV)/bin/python,$(PY)),setup)
	QUANTBENCH_TEST_DEVICE=cuda $(PY) -m pytest tests/gpu -v -rs --durations=10 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
