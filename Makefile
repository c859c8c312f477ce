# voxseg: `make demo` runs the main job, `make test` the test suite (after `make lint`: ruff and
# mypy); all install first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.voxseg-installed
DATA ?= data/synthetic

.PHONY: install demo lint test test-all gpu-check clean

install: $(STAMP)

# Re-runs only when the dependency list or the install scripts change (or .venv is gone).
$(STAMP): pyproject.toml tools/install/install.sh tools/install/patch_minkowski.py
	PYTHON=$(PYTHON) bash tools/install/install.sh
	touch $@

demo: install
	$(PY) tools/demo.py --data $(DATA)

# Settings in pyproject.toml ([tool.ruff], [tool.mypy]).
lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -m "not slow" tests

test-all: lint
	$(PY) -m pytest tests

# On a CUDA machine: installs with the CUDA route, runs the cuda tests, the backbone benchmarks and short
# GPU runs, and prints one summary (tools/gpu_check.sh, under 9 minutes on an H100); elsewhere one line.
gpu-check:
	@PYTHON=$(PYTHON) bash tools/gpu_check.sh

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache
