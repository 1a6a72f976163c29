"""The torch backend on a CUDA GPU: CUDA graphs, fp16, device tensors in and out, batching.

Marked ``gpu``; skipped where torch sees no CUDA device. ``benchmarks/gpu_check.sh`` runs them on a
lent GPU machine.
"""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgecore import Engine, EngineConfig  # noqa: E402
from edgecore.selection import load_graph  # noqa: E402
from edgecore.testing import BackendConformance  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]


class TestTorchCudaConformance(BackendConformance):
    """The conformance suite on the GPU (float32; cuDNN may use TF32 for convolutions)."""

    backend = "torch"
    config = {"device": "gpu"}
    rtol = 5e-3
    atol = 5e-3


def _image(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 32, 32)).astype(np.float32)


def _cpu_logits(graph, x):
    with Engine(EngineConfig(backend="torch", device="cpu")).load(graph) as engine:
        return engine.run({"input": x})["logits"]


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_cuda_graph_replays_match_the_cpu():
    graph = load_graph("zoo:resnet_tiny")
    x = _image(4)
    want = _cpu_logits(graph, x)
    with Engine(EngineConfig(backend="torch", device="gpu")).load(graph) as engine:
        results = [engine.run({"input": x})["logits"] for _ in range(4)]
        [signature] = engine.compiled.signatures()
    assert signature["cuda_graph"], signature
    for got in results:  # recording run, eager warm-up, capture, replay
        np.testing.assert_allclose(got, want, rtol=5e-3, atol=5e-3)  # cuDNN may use TF32


def test_fp16_with_cuda_graphs_keeps_float32_outputs():
    graph = load_graph("zoo:mobilenet_v2_tiny")
    x = _image(8, seed=1)
    want = _cpu_logits(graph, x)
    with Engine(EngineConfig(backend="torch", device="gpu", precision="fp16")).load(graph) as engine:
        for _ in range(3):
            got = engine.run({"input": x})["logits"]
        assert engine.compiled.signatures()[0]["cuda_graph"]
    assert got.dtype == np.float32
    assert _cosine(got, want) > 0.999


def test_bert_on_cuda_matches_onnxruntime():
    import onnxruntime

    graph = load_graph("zoo:bert_tiny")
    rng = np.random.default_rng(2)
    feeds = {
        "input_ids": rng.integers(0, 1000, (2, 16)).astype(np.int64),
        "attention_mask": np.ones((2, 16), np.int64),
        "token_type_ids": np.zeros((2, 16), np.int64),
    }
    session = onnxruntime.InferenceSession(graph.to_bytes(), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    with Engine(EngineConfig(backend="torch", device="gpu")).load(graph) as engine:
        for _ in range(3):
            got = engine.run(feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=2e-3, atol=2e-3)


def test_device_tensors_in_and_out_without_host_copies():
    graph = load_graph("zoo:resnet_tiny")
    x = _image(2, seed=3)
    config = EngineConfig(backend="torch", device="gpu", custom_options={"output_device": "device"})
    with Engine(config).load(graph) as engine:
        device_x = torch.from_numpy(x).cuda()
        outputs = [engine.run({"input": device_x})["logits"] for _ in range(3)]
    assert all(o.is_cuda for o in outputs)
    assert len({o.data_ptr() for o in outputs}) == 3  # each request owns its tensor
    np.testing.assert_allclose(outputs[-1].cpu().numpy(), _cpu_logits(graph, x), rtol=5e-3, atol=5e-3)


def test_cupy_arrays_go_in_through_dlpack():
    cupy = pytest.importorskip("cupy")
    graph = load_graph("zoo:digits_cnn")
    x = np.random.default_rng(4).standard_normal((3, 1, 8, 8)).astype(np.float32)
    with Engine(EngineConfig(backend="torch", device="gpu")).load(graph) as engine:
        got = engine.run({"input": cupy.asarray(x)})["logits"]
        want = engine.run({"input": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_dynamic_batching_on_the_gpu_answers_every_request():
    graph = load_graph("zoo:mobilenet_v2_tiny")
    requests = [_image(1, seed=s) for s in range(48)]
    config = EngineConfig(backend="torch", device="gpu", max_batch_size=16, max_queue_delay_us=2000)
    with Engine(config).load(graph) as engine:
        want = [engine.run({"input": x})["logits"] for x in requests]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(lambda x=x: engine.submit({"input": x}).result()["logits"]) for x in requests]
            got = [f.result() for f in futures]
        stats = engine.stats()
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=5e-3, atol=5e-3)
    assert max(stats.batch_size_histogram) > 1
