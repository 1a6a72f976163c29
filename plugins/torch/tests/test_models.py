"""Whole models on the torch backend against onnxruntime on the same inputs: every tiny zoo model,
MobileNet-v2 at full width, and models exported from torch (a detector with dynamic image size, a
CRNN recognizer with a bidirectional LSTM and a GRU over a dynamic width, a transformer encoder)."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime
import pytest

from edgecore import Engine, EngineConfig
from edgecore.selection import load_graph

CPU = EngineConfig(backend="torch", device="cpu", num_threads=1)


def _feeds(graph, batch: int, sequence: int = 12, image: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in graph.inputs:
        shape = []
        for d in spec.shape:
            if isinstance(d, int):
                shape.append(d)
            else:
                shape.append({"batch": batch, "sequence": sequence}.get(d, image or 2))
        if spec.dtype.numpy == np.int64:
            high = 2 if ("mask" in spec.name or "type" in spec.name) else 1000
            feeds[spec.name] = rng.integers(0, high, shape).astype(np.int64)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _ort(model_bytes: bytes, feeds: dict) -> dict[str, np.ndarray]:
    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


@pytest.mark.parametrize("name", ["mobilenet_v2_tiny", "resnet_tiny", "efficientnet_tiny", "bert_tiny", "digits_cnn"])
def test_tiny_zoo_models_match_onnxruntime(name, close):
    graph = load_graph(f"zoo:{name}")
    data = graph.to_bytes()
    with Engine(CPU).load(graph) as engine:
        for batch, seed in ((1, 0), (3, 1), (1, 2)):
            feeds = _feeds(graph, batch, seed=seed)
            close(engine.run(feeds), _ort(data, feeds), rtol=2e-5)
        assert len(engine.compiled.signatures()) == 2  # batch 1 recorded once, replayed


def test_full_mobilenet_v2_matches_onnxruntime(close):
    from edgecore import zoo

    graph = load_graph(zoo.build("mobilenet_v2", image_size=64))
    feeds = _feeds(graph, 2)
    with Engine(CPU).load(graph) as engine:
        close(engine.run(feeds), _ort(graph.to_bytes(), feeds), rtol=2e-5)
        assert engine.compiled.memory_bytes() >= 3_500_000 * 4  # its weights


@pytest.mark.parametrize("precision, rtol", [("bf16", 0.05), ("fp16", 0.01)])
def test_half_precisions_stay_close_to_float32(precision, rtol):
    graph = load_graph("zoo:resnet_tiny")
    feeds = _feeds(graph, 2)
    with Engine(CPU).load(graph) as engine:
        want = engine.run(feeds)["logits"]
    config = EngineConfig(backend="torch", device="cpu", num_threads=1, precision=precision)
    with Engine(config).load(graph) as engine:
        got = engine.run(feeds)["logits"]
    assert got.dtype == np.float32  # inputs and outputs keep the model's types
    cosine = float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want))
    assert cosine > 1 - rtol, cosine


# -- models exported from torch ---------------------------------------------------------------------


def _export(module, example, dynamic_axes, **kwargs) -> bytes:
    import warnings

    import torch

    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shapes read as Python values
            torch.onnx.export(
                module.eval(), (example,), buffer, input_names=["x"], output_names=["y"],
                dynamic_axes=dynamic_axes, dynamo=False, opset_version=17, **kwargs,
            )
    except Exception as exc:  # the legacy exporter may leave a future torch
        pytest.skip(f"torch.onnx.export (TorchScript) is not usable here: {exc!r}")
    return buffer.getvalue()


def _detector():
    import torch

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.bn = torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.BatchNorm2d(8)
            self.c2 = torch.nn.Conv2d(8, 16, 3, 2, 1)
            self.head = torch.nn.Conv2d(24, 6, 1)

        def forward(self, x):
            a = torch.nn.functional.silu(self.bn(self.c1(x)))
            b = torch.relu(self.c2(a))
            up = torch.nn.functional.interpolate(b, scale_factor=2, mode="nearest")
            y = self.head(torch.cat([a, up[:, :, : a.shape[2], : a.shape[3]]], 1))
            n, c, h, w = y.shape
            return y.permute(0, 2, 3, 1).reshape(n, h * w, c).sigmoid()

    torch.manual_seed(0)
    module = Detector()
    module.bn.running_mean.uniform_(-0.5, 0.5)
    module.bn.running_var.uniform_(0.5, 2.0)
    return module, torch.randn(1, 3, 32, 48), {"x": {0: "n", 2: "h", 3: "w"}}, [(1, 3, 32, 48), (2, 3, 64, 40), (1, 3, 24, 24)]


def _recognizer():
    import torch

    class CRNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Sequential(
                torch.nn.Conv2d(1, 8, 3, 1, 1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                torch.nn.Conv2d(8, 16, 3, 1, 1), torch.nn.ReLU(), torch.nn.MaxPool2d((2, 1)),
            )
            self.lstm = torch.nn.LSTM(64, 32, bidirectional=True)
            self.gru = torch.nn.GRU(64, 16)
            self.fc = torch.nn.Linear(16, 11)

        def forward(self, x):
            f = self.conv(x)
            n, c, h, w = f.shape
            y, _ = self.lstm(f.permute(3, 0, 1, 2).reshape(w, n, c * h))
            y, _ = self.gru(y)
            return self.fc(y).log_softmax(-1)

    torch.manual_seed(1)
    return CRNN(), torch.randn(1, 1, 16, 40), {"x": {0: "n", 3: "w"}}, [(1, 1, 16, 40), (3, 1, 16, 64)]


def _transformer():
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(6, 32)
            self.layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
            self.cls = torch.nn.Linear(32, 3)

        def forward(self, x):
            return self.cls(self.layer(self.proj(x)).mean(1))

    torch.manual_seed(2)
    return Encoder(), torch.randn(2, 7, 6), {"x": {0: "n"}}, [(2, 7, 6), (5, 7, 6)]


@pytest.mark.parametrize("make", [_detector, _recognizer, _transformer], ids=["detector", "crnn-lstm-gru", "transformer"])
def test_exported_models_match_onnxruntime(make, close):
    module, example, dynamic_axes, shapes = make()
    data = _export(module, example, dynamic_axes)
    with Engine(CPU).load(data) as engine:
        for seed, shape in enumerate(shapes):
            feeds = {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}
            close(engine.run(feeds), _ort(data, feeds), rtol=2e-5)
        assert all(s["dynamic_steps"] == 0 for s in engine.compiled.signatures())
