"""Models whose output shapes depend on the data (TopK with K as an input, NonZero), through the
scheduler from several threads: every answer equals raw onnxruntime on the same bytes and inputs,
no caller blocks forever, and the runtime prints nothing.

These models are never batched (their inputs do not share a batch dimension, or their outputs do
not start with one): every request runs alone, on whichever thread takes it -- a worker or the
calling thread itself -- so a backend must not assume that an input shape fixes the output shape.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgecore import Engine, EngineConfig
from edgecore.testing.graphs import make_model

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("edgecore_cpu_simd")

N = 16


def topk_model():
    node = helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=-1)
    return make_model(
        [node],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", N]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["batch", "k"]),
         helper.make_tensor_value_info("indices", TensorProto.INT64, ["batch", "k"])],
    )


def nonzero_model():
    node = helper.make_node("NonZero", ["x"], ["y"])
    return make_model(
        [node],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", N])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [2, "nnz"])],
    )


def topk_feeds(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal((int(rng.integers(1, 4)), N)).astype(np.float32),
            "k": np.array([rng.integers(1, N + 1)], np.int64)}


def nonzero_feeds(rng: np.random.Generator) -> dict[str, np.ndarray]:
    x = rng.standard_normal((int(rng.integers(1, 4)), N)).astype(np.float32)
    x[rng.random(x.shape) < rng.random()] = 0  # anywhere from no zero to all zeros
    return {"x": x}


MODELS = {"topk": (topk_model, topk_feeds), "nonzero": (nonzero_model, nonzero_feeds)}


def hammer(engine: Engine, model, make_feeds, threads: int, per_thread: int, call) -> list[str]:
    """``threads`` threads each send ``per_thread`` requests through ``call``; returns mismatches."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    wrong: list[str] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for i in range(per_thread):
            feeds = make_feeds(rng)
            try:
                got = call(engine, feeds)
                want = dict(zip(names, session.run(None, feeds)))
                bad = [n for n in names if got[n].shape != want[n].shape or not np.array_equal(got[n], want[n])]
                problem = f"outputs {bad} differ" if bad else ""
            except Exception as exc:  # noqa: BLE001 - reported below, with the request
                problem = f"{type(exc).__name__}: {exc}"
            if problem:
                with lock:
                    wrong.append(f"thread {seed} request {i} ({ {k: v.shape for k, v in feeds.items()} }): {problem}")

    workers = [threading.Thread(target=client, args=(seed,)) for seed in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
        assert not t.is_alive(), "a caller is blocked forever"
    return wrong


def test_topk_with_input_k_through_dynamic_batching_from_two_threads(capfd):
    """The issue's reproduction: 2 threads x 2,000 ``Engine.run`` calls with dynamic batching."""
    model = topk_model()
    config = EngineConfig(backend="cpu_simd", num_threads=1, enable_dynamic_batching=True)
    with Engine(config).load(model) as engine:
        wrong = hammer(engine, model, topk_feeds, 2, 2000, lambda e, f: e.run(f))
        stats = engine.stats()
    assert not wrong, f"{len(wrong)} wrong answers, first: {wrong[:3]}"
    assert stats.total_inferences == 4000 and stats.failed_inferences == 0
    captured = capfd.readouterr()
    assert captured.err == "", captured.err[:2000]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("path", ["run", "run_queued", "submit"])
def test_data_dependent_outputs_from_four_threads(name, path, capfd):
    build, make_feeds = MODELS[name]
    model = build()
    config = EngineConfig(
        backend="cpu_simd", num_threads=1, enable_dynamic_batching=path == "run_queued", instances=2 if path == "submit" else 1
    )
    call = (lambda e, f: e.submit(f).result(30)) if path == "submit" else (lambda e, f: e.run(f))
    with Engine(config).load(model) as engine:
        wrong = hammer(engine, model, make_feeds, 4, 300, call)
    assert not wrong, f"{len(wrong)} wrong answers, first: {wrong[:3]}"
    assert capfd.readouterr().err == ""
