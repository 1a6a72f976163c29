"""Outputs whose shape depends on the data: the runtime allocates them, requests of any size keep
being answered, and ONNX Runtime prints nothing."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper


def test_topk_with_k_as_an_input_alternating(model_factory, engine_for, raw_run, same, capfd):
    model = model_factory(
        [helper.make_node("TopK", ["x", "k"], ["v", "i"])],
        [("x", TP.FLOAT, [2, 10]), ("k", TP.INT64, [1])],
        [("v", TP.FLOAT, [2, "kk"]), ("i", TP.INT64, [2, "kk"])],
    )
    engine = engine_for(model)
    x = np.random.default_rng(0).standard_normal((2, 10)).astype(np.float32)
    for k in [3, 5, 3, 5, 1, 10, 3]:
        feeds = {"x": x, "k": np.array([k], np.int64)}
        got = engine.run(feeds)
        same(got, raw_run(model, feeds))
        assert got["v"].shape == (2, k)
    assert capfd.readouterr().err == ""


def _data_dependent_cases():
    rng = np.random.default_rng(1)
    boxes = rng.uniform(0, 10, (1, 20, 4)).astype(np.float32)
    boxes[..., 2:] += boxes[..., :2]
    scores = rng.uniform(0, 1, (1, 1, 20)).astype(np.float32)
    return [
        pytest.param(
            [helper.make_node("NonZero", ["x"], ["y"])],
            [("x", TP.FLOAT, ["n", 4])],
            [("y", TP.INT64, [2, "nz"])],
            [{"x": (rng.standard_normal((n, 4)) > t).astype(np.float32)} for n, t in [(3, 0), (3, 1), (5, 0), (3, 2)]],
            id="NonZero",
        ),
        pytest.param(
            [helper.make_node("Reshape", ["x", "s"], ["y"])],
            [("x", TP.FLOAT, [24]), ("s", TP.INT64, [2])],
            [("y", TP.FLOAT, ["a", "b"])],
            [{"x": np.arange(24, dtype=np.float32), "s": np.array(s, np.int64)} for s in [(4, 6), (6, 4), (2, 12), (4, 6)]],
            id="Reshape-shape-input",
        ),
        pytest.param(
            [helper.make_node("Unique", ["x"], ["y", "idx", "inv", "cnt"], sorted=1)],
            [("x", TP.INT64, ["n"])],
            [("y", TP.INT64, ["u"]), ("idx", TP.INT64, ["u"]), ("inv", TP.INT64, ["n"]), ("cnt", TP.INT64, ["u"])],
            [{"x": rng.integers(0, m, 12).astype(np.int64)} for m in (3, 7, 2, 12)],
            id="Unique",
        ),
        pytest.param(
            [helper.make_node("Compress", ["x", "c"], ["y"], axis=0)],
            [("x", TP.FLOAT, ["n", 3]), ("c", TP.BOOL, ["n"])],
            [("y", TP.FLOAT, ["m", 3])],
            [{"x": rng.standard_normal((6, 3)).astype(np.float32), "c": rng.uniform(size=6) > t} for t in (0.2, 0.5, 0.9, 0.5)],
            id="Compress",
        ),
        pytest.param(
            [helper.make_node("NonMaxSuppression", ["b", "s", "m", "iou", "st"], ["sel"])],
            [("b", TP.FLOAT, [1, 20, 4]), ("s", TP.FLOAT, [1, 1, 20]), ("m", TP.INT64, [1]), ("iou", TP.FLOAT, [1]), ("st", TP.FLOAT, [1])],
            [("sel", TP.INT64, ["k", 3])],
            [
                {"b": boxes, "s": scores, "m": np.array([m], np.int64), "iou": np.array([i], np.float32), "st": np.array([0.1], np.float32)}
                for m, i in [(5, 0.5), (20, 0.3), (2, 0.5), (20, 0.9)]
            ],
            id="NonMaxSuppression",
        ),
    ]


@pytest.mark.parametrize(("nodes", "inputs", "outputs", "requests"), _data_dependent_cases())
def test_data_dependent_output_shapes_match_onnxruntime(nodes, inputs, outputs, requests, model_factory, engine_for, raw_run, same, capfd):
    model = model_factory(nodes, inputs, outputs)
    engine = engine_for(model)
    for feeds in requests:
        same(engine.run(feeds), raw_run(model, feeds))
    assert capfd.readouterr().err == ""


def test_a_wrongly_declared_output_shape_falls_back_to_the_runtime(model_factory, engine_for, raw_run, same, capfd):
    """The graph says y is [n] (an input's dimension), but Slice with data-given ends makes it
    shorter: the first refused run is answered by a rerun, later ones go to the runtime at once."""
    model = model_factory(
        [helper.make_node("Slice", ["x", "starts", "ends"], ["y"]), helper.make_node("Relu", ["x"], ["z"])],
        [("x", TP.FLOAT, ["n"]), ("starts", TP.INT64, [1]), ("ends", TP.INT64, [1])],
        [("y", TP.FLOAT, ["n"]), ("z", TP.FLOAT, ["n"])],
    )
    engine = engine_for(model)
    x = np.linspace(-1, 1, 8, dtype=np.float32)
    for end in [8, 3, 5, 8, 2]:
        feeds = {"x": x, "starts": np.array([0], np.int64), "ends": np.array([end], np.int64)}
        same(engine.run(feeds), raw_run(model, feeds))
    compiled = engine.compiled
    assert compiled._demoted == {0}  # y now comes from the runtime; z still from the pool
    assert capfd.readouterr().err == ""


def test_outputs_of_unknown_rank_come_from_the_runtime(model_factory, engine_for, raw_run, same):
    model = model_factory(
        [helper.make_node("Reshape", ["x", "s"], ["y"])],
        [("x", TP.FLOAT, [12]), ("s", TP.INT64, ["r"])],
        [("y", TP.FLOAT, None)],
    )
    engine = engine_for(model)
    for shape in [(12,), (3, 4), (2, 2, 3)]:
        feeds = {"x": np.arange(12, dtype=np.float32), "s": np.array(shape, np.int64)}
        same(engine.run(feeds), raw_run(model, feeds))
