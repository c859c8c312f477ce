# voxseg: `make demo` runs the main job, `make test` the test suite; both install first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.voxseg-installed
DATA ?= data/synthetic

.PHONY: install demo test test-all clean

install: $(STAMP)

# Re-runs only when the dependency list or the install scripts change (or .venv is gone).
$(STAMP): pyproject.toml tools/install/install.sh tools/install/patch_minkowski.py
	PYTHON=$(PYTHON) bash tools/install/install.sh
	touch $@

demo: install
	$(PY) tools/demo.py --data $(DATA)

test: install
	$(PY) -m pytest -m "not slow" tests

test-all: install
	$(PY) -m pytest tests

clean:
	rm -rf $(VENV) runs .pytest_cache
