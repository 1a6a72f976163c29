# Everything a fresh clone needs: `make bench` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Every distribution in the repo, installed editable into one venv.
DISTS := . plugins/cpu_simd $(wildcard plugins/openvino_npu) contrib/reference_backend $(wildcard contrib/serve)

.PHONY: setup bench test clean

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml contrib/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=70.1" wheel
	$(PY) -m pip install -q $(foreach d,$(DISTS),-e $(d)) -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

bench: $(STAMP)
	$(VENV)/bin/edgecore bench zoo:mobilenet_v2

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)
