"""The README's promise: every error edgecore raises on purpose is an ``edgecore.errors`` type.

Each public entry point is called with bad arguments; what comes out must be an
:class:`~edgecore.errors.EdgecoreError` (of the documented kind), never a bare ValueError, KeyError,
TypeError, RuntimeError or the runtime's own exception; and the engine keeps serving afterwards.
"""

from __future__ import annotations

import asyncio

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgecore
from edgecore import Engine, EngineConfig, errors
from edgecore.graph import Graph
from edgecore.selection import load_graph


def _model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


GOOD = {"x": np.ones((2, 4), np.float32)}


@pytest.fixture(scope="module")
def engine():
    with Engine(EngineConfig(backend="cpu_simd")).load(_model()) as engine:
        yield engine


def test_every_error_type_is_exported_from_edgecore():
    for name in errors.__all__:
        assert getattr(edgecore, name) is getattr(errors, name), name
        assert issubclass(getattr(errors, name), errors.EdgecoreError)


CONFIGS = [
    {"num_threads": -1},
    {"num_threads": "two"},
    {"device": "tpu"},
    {"graph_optimization_level": "max"},
    {"max_batch_size": 0},
    {"preferred_batch_sizes": (32,)},
    {"preferred_batch_sizes": ("a",)},
    {"custom_options": 5},
    {"max_queue_delay_us": -5},
    {"instances": 0},
]


@pytest.mark.parametrize("fields", CONFIGS, ids=[next(iter(c)) + "=" + repr(next(iter(c.values()))) for c in CONFIGS])
def test_bad_settings_raise_configuration_error(fields):
    with pytest.raises(errors.ConfigurationError, match=next(iter(fields))):
        EngineConfig(**fields)


SOURCES = [42, None, b"", b"not a model", "no/such/model.onnx", "zoo:no_such_model", ".", onnx.ModelProto()]


@pytest.mark.parametrize("source", SOURCES, ids=[repr(s)[:30] for s in SOURCES])
def test_bad_model_sources_raise_model_load_error(source):
    with pytest.raises(errors.ModelLoadError):
        Engine().load(source)
    with pytest.raises(errors.ModelLoadError):
        load_graph(source)


def test_unknown_backend_option_and_backend():
    with pytest.raises(errors.ConfigurationError, match="frobnicate"):
        Engine(EngineConfig(backend="cpu_simd", custom_options={"frobnicate": 1})).load(_model())
    with pytest.raises(errors.BackendUnavailableError, match="nope"):
        Engine(EngineConfig(backend="nope")).load(_model())


def test_before_load_and_after_close():
    empty = Engine()
    for call in (lambda: empty.run(GOOD), lambda: empty.submit(GOOD), lambda: empty.inputs, lambda: empty.compiled):
        with pytest.raises(errors.ModelNotLoadedError):
            call()
    closed = Engine().load(_model())
    closed.close()
    closed.close()  # twice is fine
    for call in (lambda: closed.run(GOOD), lambda: closed.submit(GOOD), lambda: closed.load(_model())):
        with pytest.raises(errors.EngineClosedError):
            call()


FEEDS = {
    "not a mapping": [np.ones((2, 4), np.float32)],
    "missing input": {},
    "unknown input": {"x": np.ones((2, 4), np.float32), "z": np.ones(1)},
    "wrong dtype": {"x": np.ones((2, 4), np.float64)},
    "wrong rank": {"x": np.ones((4,), np.float32)},
    "wrong fixed dim": {"x": np.ones((2, 5), np.float32)},
    "strings for floats": {"x": np.array([["a"] * 4])},
    "ragged list": {"x": [[1.0, 2.0], [3.0]]},
    "object": {"x": object()},
}


@pytest.mark.parametrize("feeds", FEEDS.values(), ids=FEEDS.keys())
@pytest.mark.parametrize("path", ["run", "submit", "batched", "compiled"])
def test_bad_feeds_raise_invalid_input_and_the_engine_keeps_serving(engine, feeds, path):
    if path == "run":
        call = lambda: engine.run(feeds)  # noqa: E731
    elif path == "submit":
        call = lambda: engine.submit(feeds).result(5)  # noqa: E731
    elif path == "compiled":
        call = lambda: engine.compiled.run(feeds)  # noqa: E731
    else:
        batched = Engine(EngineConfig(backend="cpu_simd", enable_dynamic_batching=True)).load(_model())
        call = lambda: batched.run(feeds)  # noqa: E731
    with pytest.raises(errors.InvalidInputError):
        call()
    np.testing.assert_array_equal(engine.run(GOOD)["y"], GOOD["x"])


OUTS = {
    "not a mapping": [np.empty((2, 4), np.float32)],
    "unknown name": {"z": np.empty((2, 4), np.float32)},
    "wrong dtype": {"y": np.empty((2, 4), np.float64)},
    "read-only": {"y": np.empty((2, 4), np.float32)},
    "not contiguous": {"y": np.empty((4, 2), np.float32).T},
    "wrong shape": {"y": np.empty((3, 4), np.float32)},
    "not an array": {"y": [0.0] * 8},
}
OUTS["read-only"]["y"].flags.writeable = False


@pytest.mark.parametrize("out", OUTS.values(), ids=OUTS.keys())
def test_bad_out_buffers_raise_invalid_input(engine, out):
    with pytest.raises(errors.InvalidInputError):
        engine.run(GOOD, out=out)
    buffer = np.empty((2, 4), np.float32)
    assert engine.run(GOOD, out={"y": buffer})["y"] is buffer


def test_bad_request_options(engine):
    for call in (
        lambda: engine.run(GOOD, timeout_ms=-1),
        lambda: engine.submit(GOOD, priority=5),
        lambda: engine.submit(GOOD, priority="high"),
        lambda: engine.submit(GOOD, timeout_ms=-1),
    ):
        with pytest.raises(errors.ConfigurationError):
            call()

    async def run_async():
        return await engine.run_async(GOOD, priority=-1)

    with pytest.raises(errors.ConfigurationError):
        asyncio.run(run_async())


def test_runtime_failures_name_the_backend_and_keep_the_cause():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"])], "add", [x, y], [z])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with Engine(EngineConfig(backend="cpu_simd")).load(model) as engine:
        with pytest.raises(errors.BackendExecutionError, match="cpu_simd") as info:
            engine.run({"x": np.ones(2, np.float32), "y": np.ones(3, np.float32)})
        assert info.value.__cause__ is not None
        assert engine.run({"x": np.ones(3, np.float32), "y": np.ones(3, np.float32)})["z"].tolist() == [2, 2, 2]


def test_graph_and_optimizer_entry_points():
    with pytest.raises(errors.ModelLoadError):
        Graph.load(3.5)
    from edgecore.optimize import OptimizationConfig, optimize

    with pytest.raises(errors.EdgecoreError):
        OptimizationConfig(pruning_ratio=2.0)
    with pytest.raises(errors.ModelLoadError):
        optimize(b"garbage", OptimizationConfig())


def test_zoo_and_bench_entry_points():
    from edgecore import zoo

    with pytest.raises(errors.ModelLoadError, match="no_such"):
        zoo.build("no_such")
    with pytest.raises(errors.ModelLoadError, match="bogus_option"):
        zoo.build("digits_cnn", bogus_option=3)
    from edgecore.bench import BenchSettings, run_benchmark

    with pytest.raises(errors.EdgecoreError):
        run_benchmark("zoo:digits_cnn", ["no-such-scenario"], settings=BenchSettings(duration_s=0.1))
    with pytest.raises(errors.EdgecoreError):
        BenchSettings(duration_s=-1)


def test_trace_viewer_on_bad_files(tmp_path):
    from edgecore.profiling.viewer import load_trace

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for path in (bad, tmp_path / "missing.json"):
        with pytest.raises(errors.EdgecoreError):
            load_trace(path)
