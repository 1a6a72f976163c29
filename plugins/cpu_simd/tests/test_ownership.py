"""Returned outputs belong to the caller: pool buffers handed out per request, back in the pool only
once the caller's array and its views are gone; static shapes reuse them (no fresh memory)."""

from __future__ import annotations

import gc
import threading

import numpy as np
from onnx import TensorProto as TP
from onnx import helper


def _relu(model_factory, shape=("n", 8)):
    return model_factory([helper.make_node("Relu", ["x"], ["y"])], [("x", TP.FLOAT, list(shape))], [("y", TP.FLOAT, list(shape))])


def test_held_outputs_and_their_views_are_never_overwritten(model_factory, engine_for):
    engine = engine_for(_relu(model_factory))
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((4, 8)).astype(np.float32) for _ in range(40)]
    held = [engine.run({"x": x})["y"] for x in inputs[:20]]  # more than any fixed number of slots
    views = [engine.run({"x": x})["y"][1:3] for x in inputs[20:]]
    gc.collect()
    for _ in range(50):
        engine.run({"x": inputs[0]})
    for x, y in zip(inputs[:20], held):
        np.testing.assert_array_equal(y, np.maximum(x, 0))
    for x, v in zip(inputs[20:], views):
        np.testing.assert_array_equal(v, np.maximum(x[1:3], 0))


def test_static_shapes_reach_a_steady_state_without_fresh_memory(model_factory, engine_for):
    engine = engine_for(_relu(model_factory))
    x = np.ones((4, 8), np.float32)
    kept = None
    for _ in range(10):
        kept = engine.run({"x": x})["y"]
    before = engine.pool.statistics()
    for _ in range(200):
        kept = engine.run({"x": x})["y"]  # the caller holds the last result while the next one runs
    for _ in range(200):
        engine.run({"x": x})  # the caller drops each result
    after = engine.pool.statistics()
    assert after.misses == before.misses and after.reserved_bytes == before.reserved_bytes
    assert after.allocations - before.allocations == 400 and after.hits - before.hits == 400
    del kept


def test_many_input_shapes_while_an_early_output_is_held(model_factory, engine_for):
    """Once raised KeyError: more than 64 shapes seen while the caller held an output of the first."""
    engine = engine_for(_relu(model_factory))
    first = np.full((1, 8), -1.0, np.float32)
    held = [engine.run({"x": first})["y"], engine.run({"x": first})["y"]]
    for n in range(2, 200):
        y = engine.run({"x": np.full((n, 8), float(n), np.float32)})["y"]
        assert y.shape == (n, 8) and y[0, 0] == n
    again = engine.run({"x": np.ones((1, 8), np.float32)})["y"]
    np.testing.assert_array_equal(again, np.ones((1, 8), np.float32))
    assert all((h == 0).all() for h in held)


def test_threads_share_a_model_and_keep_their_own_outputs(model_factory, engine_for):
    engine = engine_for(_relu(model_factory), num_threads=1)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            kept = []
            for _ in range(300):
                x = rng.standard_normal((int(rng.integers(1, 6)), 8)).astype(np.float32)
                kept.append((x, engine.run({"x": x})["y"]))
                kept = kept[-5:]
                for old_x, old_y in kept:
                    np.testing.assert_array_equal(old_y, np.maximum(old_x, 0))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    gc.collect()
    assert engine.pool.statistics().in_use_bytes == 0


def test_non_contiguous_inputs(model_factory, engine_for, raw_run, same):
    model = model_factory(
        [helper.make_node("Add", ["a", "b"], ["y"])], [("a", TP.FLOAT, ["n", 6]), ("b", TP.FLOAT, ["n", 6])], [("y", TP.FLOAT, ["n", 6])]
    )
    engine = engine_for(model)
    base = np.random.default_rng(0).standard_normal((6, 12)).astype(np.float32)
    for a, b in [(base[:, ::2], base[:, 1::2]), (base[:, :6].T.copy().T, base[::-1, 6:]), (base[::2, :6], base[1::2, 6:])]:
        feeds = {"a": a, "b": b}
        same(engine.run(feeds), raw_run(model, {k: np.ascontiguousarray(v) for k, v in feeds.items()}))


def test_without_a_memory_pool(model_factory, engine_for):
    engine = engine_for(_relu(model_factory), enable_memory_pool=False)
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
    first = engine.run({"x": x})["y"]
    second = engine.run({"x": -x})["y"]
    np.testing.assert_array_equal(first, np.maximum(x, 0))
    np.testing.assert_array_equal(second, np.maximum(-x, 0))


def test_out_buffers_are_written_in_place(model_factory, engine_for):
    engine = engine_for(_relu(model_factory))
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
    buffer = np.empty((2, 8), np.float32)
    result = engine.run({"x": x}, out={"y": buffer})
    assert result["y"] is buffer
    np.testing.assert_array_equal(buffer, np.maximum(x, 0))
