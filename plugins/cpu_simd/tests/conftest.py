"""Fixtures of the cpu_simd plugin's tests: one-node models, and running them through edgecore and
through raw onnxruntime on the same inputs."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("edgecore_cpu_simd", reason="edgecore-cpu-simd is not installed")

from onnx import TensorProto, helper  # noqa: E402

from edgecore import Engine, EngineConfig  # noqa: E402


def make_model(nodes, inputs, outputs, *, opset: int = 21, initializers=(), ml: int | None = None):
    """A model from ``helper`` nodes; inputs/outputs as (name, elem type, shape) triples (shape None:
    unknown rank)."""
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "g",
        [value(name, elem, shape) for name, elem, shape in inputs],
        [value(name, elem, shape) for name, elem, shape in outputs],
        list(initializers),
    )
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("ai.onnx.ml", ml)] if ml else [])
    return helper.make_model(graph, opset_imports=opsets)


@pytest.fixture
def model_factory() -> Callable[..., Any]:
    return make_model


@pytest.fixture
def engine_for():
    """``engine_for(model, **config)``: a cpu_simd Engine, closed after the test."""
    engines: list[Engine] = []

    def build(model, **config: Any) -> Engine:
        config.setdefault("num_threads", 1)
        engine = Engine(EngineConfig(backend="cpu_simd", **config)).load(model)
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.close()


@pytest.fixture
def raw_run():
    """``raw_run(model, feeds)``: raw onnxruntime's outputs, by name (quiet: errors still raise)."""
    sessions: dict[int, Any] = {}

    def run(model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = sessions.get(id(model))
        if session is None:
            so = ort.SessionOptions()
            so.log_severity_level = 4
            session = sessions[id(model)] = ort.InferenceSession(
                model.SerializeToString(), so, providers=["CPUExecutionProvider"]
            )
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))

    return run


def assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(got) == list(expected)
    for name, want in expected.items():
        have = got[name]
        assert have.shape == want.shape and have.dtype == want.dtype, (name, have.shape, want.shape, have.dtype, want.dtype)
        np.testing.assert_array_equal(have, want, err_msg=name)


@pytest.fixture
def same() -> Callable[[dict, dict], None]:
    return assert_same


TP = TensorProto
