"""Deadlines (RunOptions.terminate), the memory budget (pool, runtime-allocated outputs, ONNX
Runtime's working memory) and which failures are whose."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

from edgecore import BackendExecutionError, Engine, EngineConfig, InvalidInputError, MemoryBudgetExceeded, RequestTimeoutError


def _counting_loop(model_factory):
    """y = x + trip count (a Loop adding 1 per iteration)."""
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "one"], ["acc_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TP.INT64, []),
            helper.make_tensor_value_info("cond_in", TP.BOOL, []),
            helper.make_tensor_value_info("acc_in", TP.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("cond_out", TP.BOOL, []), helper.make_tensor_value_info("acc_out", TP.FLOAT, [1])],
        [helper.make_tensor("one", TP.FLOAT, [1], [1.0])],
    )
    return model_factory(
        [helper.make_node("Loop", ["n", "c", "x"], ["y"], body=body)],
        [("n", TP.INT64, []), ("c", TP.BOOL, []), ("x", TP.FLOAT, [1])],
        [("y", TP.FLOAT, [1])],
        opset=17,
    )


def _loop_feeds(n: int) -> dict[str, np.ndarray]:
    return {"n": np.array(n, np.int64), "c": np.array(True), "x": np.zeros(1, np.float32)}


def test_a_deadline_stops_a_runaway_loop_and_the_next_request_is_answered(model_factory, capfd):
    with Engine(EngineConfig(backend="cpu_simd")).load(_counting_loop(model_factory)) as engine:
        with pytest.raises(RequestTimeoutError, match="deadline"):
            engine.run(_loop_feeds(10**9), timeout_ms=200)
        np.testing.assert_array_equal(engine.run(_loop_feeds(10))["y"], [10.0])
        np.testing.assert_array_equal(engine.run(_loop_feeds(7), timeout_ms=60_000)["y"], [7.0])
    assert capfd.readouterr().err == ""


def test_a_deadline_on_a_data_dependent_output_and_on_out_buffers(model_factory, engine_for):
    engine = engine_for(_counting_loop(model_factory))
    with pytest.raises(RequestTimeoutError):
        engine.run(_loop_feeds(10**9), out={"y": np.empty(1, np.float32)}, timeout_ms=100)
    buffer = np.empty(1, np.float32)
    assert engine.run(_loop_feeds(3), out={"y": buffer})["y"] is buffer and buffer[0] == 3


def _relu(model_factory):
    return model_factory([helper.make_node("Relu", ["x"], ["y"])], [("x", TP.FLOAT, ["n", 1000])], [("y", TP.FLOAT, ["n", 1000])])


def test_the_first_oversized_request_is_refused(model_factory, engine_for):
    engine = engine_for(_relu(model_factory), max_memory_usage=4096)
    with pytest.raises(MemoryBudgetExceeded, match="max_memory_usage=4096"):
        engine.run({"x": np.ones((100, 1000), np.float32)})  # a 400 kB output, on the shape's first run
    tiny = model_factory([helper.make_node("Relu", ["x"], ["y"])], [("x", TP.FLOAT, ["n"])], [("y", TP.FLOAT, ["n"])])
    small = engine_for(tiny, max_memory_usage=4096)
    np.testing.assert_array_equal(small.run({"x": -np.ones(8, np.float32)})["y"], np.zeros(8, np.float32))


def test_runtime_allocated_outputs_count_against_the_budget(model_factory, engine_for):
    model = model_factory(
        [helper.make_node("Expand", ["x", "s"], ["y"])], [("x", TP.FLOAT, [1]), ("s", TP.INT64, [1])], [("y", TP.FLOAT, ["m"])]
    )
    engine = engine_for(model, max_memory_usage=64 * 1024)
    assert engine.run({"x": np.ones(1, np.float32), "s": np.array([100], np.int64)})["y"].shape == (100,)
    with pytest.raises(MemoryBudgetExceeded, match="max_memory_usage=65536"):
        engine.run({"x": np.ones(1, np.float32), "s": np.array([100_000], np.int64)})  # 400 kB
    assert engine.run({"x": np.ones(1, np.float32), "s": np.array([10], np.int64)})["y"].shape == (10,)


def test_a_huge_intermediate_fails_within_the_budget_instead_of_growing_memory(model_factory, engine_for, capfd):
    """Expand to 20000 x 10000 floats (800 MB) then ReduceSum: under a 1 MB budget ONNX Runtime's
    arena refuses the intermediate (it once grew the process by ~795 MB per run)."""
    model = model_factory(
        [helper.make_node("Expand", ["x", "s"], ["e"]), helper.make_node("ReduceSum", ["e"], ["y"], keepdims=0)],
        [("x", TP.FLOAT, [1]), ("s", TP.INT64, [2])],
        [("y", TP.FLOAT, [])],
    )
    engine = engine_for(model, max_memory_usage=1 << 20)
    for _ in range(2):
        with pytest.raises(MemoryBudgetExceeded, match="working memory"):
            engine.run({"x": np.ones(1, np.float32), "s": np.array([20000, 10000], np.int64)})
    assert engine.run({"x": np.ones(1, np.float32), "s": np.array([10, 10], np.int64)})["y"] == 100.0
    unbudgeted = engine_for(model)  # another engine, another arena: no cap
    assert unbudgeted.run({"x": np.ones(1, np.float32), "s": np.array([300, 1000], np.int64)})["y"] == 300_000.0
    assert capfd.readouterr().err == ""


def test_an_out_buffer_of_the_wrong_shape_is_the_callers_error(model_factory, engine_for):
    model = model_factory(
        [helper.make_node("NonZero", ["x"], ["y"])], [("x", TP.FLOAT, [4])], [("y", TP.INT64, [1, "k"])]
    )
    engine = engine_for(model)
    x = np.array([1, 0, 2, 0], np.float32)
    with pytest.raises(InvalidInputError, match="out buffer 'y'"):
        engine.run({"x": x}, out={"y": np.empty((1, 3), np.int64)})
    buffer = np.empty((1, 2), np.int64)
    assert engine.run({"x": x}, out={"y": buffer})["y"] is buffer
    np.testing.assert_array_equal(buffer, [[0, 2]])
    static = engine_for(_relu(model_factory))
    with pytest.raises(InvalidInputError, match="out buffer 'y'"):
        static.run({"x": np.ones((2, 1000), np.float32)}, out={"y": np.empty((3, 1000), np.float32)})


def test_runtime_failures_on_accepted_input_are_backend_errors(model_factory, engine_for, capfd):
    model = model_factory(
        [helper.make_node("Add", ["a", "b"], ["y"])], [("a", TP.FLOAT, ["n"]), ("b", TP.FLOAT, ["m"])], [("y", TP.FLOAT, ["n"])]
    )
    engine = engine_for(model)
    with pytest.raises(BackendExecutionError, match="cpu_simd") as failure:
        engine.run({"a": np.ones(3, np.float32), "b": np.ones(4, np.float32)})  # not broadcastable
    assert not isinstance(failure.value, InvalidInputError) and failure.value.__cause__ is not None
    np.testing.assert_array_equal(engine.run({"a": np.ones(3, np.float32), "b": np.ones(3, np.float32)})["y"], [2, 2, 2])
    assert capfd.readouterr().err == ""
