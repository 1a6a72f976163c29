"""String tensors (run through session.run: IOBinding cannot bind them), and the element types and
shapes at the edges: bool, zero-size, rank 0, bfloat16, float8, 4-bit."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper
from onnx.reference import ReferenceEvaluator


def _string_cases():
    words = np.array(["a b c", "hello world", "", "x"], dtype=object)
    return [
        pytest.param(
            [helper.make_node("Cast", ["x"], ["y"], to=TP.STRING)],
            [("x", TP.FLOAT, ["n"])],
            [("y", TP.STRING, ["n"])],
            {"x": np.array([1.5, 2, -0.25], np.float32)},
            21,
            None,
            id="Cast-float-to-string",
        ),
        pytest.param(
            [helper.make_node("Cast", ["x"], ["y"], to=TP.FLOAT)],
            [("x", TP.STRING, ["n"])],
            [("y", TP.FLOAT, ["n"])],
            {"x": np.array(["1.5", "2", "-3e2"], dtype=object)},
            21,
            None,
            id="Cast-string-to-float",
        ),
        pytest.param(
            [helper.make_node("StringSplit", ["x"], ["y", "n"], delimiter=" ", maxsplit=1)],
            [("x", TP.STRING, ["b"])],
            [("y", TP.STRING, ["b", "m"]), ("n", TP.INT64, ["b"])],
            {"x": words},
            21,
            None,
            id="StringSplit",
        ),
        pytest.param(
            [helper.make_node("RegexFullMatch", ["x"], ["y"], pattern=r"[a-z]+ [a-z]+")],
            [("x", TP.STRING, ["b"])],
            [("y", TP.BOOL, ["b"])],
            {"x": words},
            21,
            None,
            id="RegexFullMatch",
        ),
        pytest.param(
            [helper.make_node("StringNormalizer", ["x"], ["y"], case_change_action="UPPER", stopwords=["x"], locale="C.UTF-8")],
            [("x", TP.STRING, ["b"])],
            [("y", TP.STRING, ["m"])],
            {"x": words},
            21,
            None,
            id="StringNormalizer",
        ),
        pytest.param(
            [helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml", keys_strings=["a", "b"], values_int64s=[1, 2], default_int64=-1)],
            [("x", TP.STRING, ["b"])],
            [("y", TP.INT64, ["b"])],
            {"x": np.array(["a", "b", "zz", "a"], dtype=object)},
            21,
            2,
            id="LabelEncoder-string-to-int",
        ),
        pytest.param(
            [helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml", keys_int64s=[1, 2], values_strings=["one", "two"], default_string="?")],
            [("x", TP.INT64, ["b"])],
            [("y", TP.STRING, ["b"])],
            {"x": np.array([2, 1, 7], np.int64)},
            21,
            2,
            id="LabelEncoder-int-to-string",
        ),
        pytest.param(
            [helper.make_node("Equal", ["a", "b"], ["y"])],
            [("a", TP.STRING, ["b"]), ("b", TP.STRING, ["b"])],
            [("y", TP.BOOL, ["b"])],
            {"a": np.array(["x", "y", "z"], dtype=object), "b": np.array(["x", "q", "z"], dtype=object)},
            21,
            None,
            id="Equal-strings",
        ),
    ]


@pytest.mark.parametrize(("nodes", "inputs", "outputs", "feeds", "opset", "ml"), _string_cases())
def test_string_models_match_onnxruntime(nodes, inputs, outputs, feeds, opset, ml, model_factory, engine_for, raw_run, same, capfd):
    model = model_factory(nodes, inputs, outputs, opset=opset, ml=ml)
    engine = engine_for(model)
    for _ in range(3):
        same(engine.run(feeds), raw_run(model, feeds))
    assert capfd.readouterr().err == ""


def test_string_inputs_given_as_numpy_str_arrays(model_factory, engine_for, raw_run, same):
    model = model_factory(
        [helper.make_node("RegexFullMatch", ["x"], ["y"], pattern="a.*")], [("x", TP.STRING, ["b"])], [("y", TP.BOOL, ["b"])]
    )
    got = engine_for(model).run({"x": np.array(["abc", "bcd"])})
    same(got, raw_run(model, {"x": np.array(["abc", "bcd"], dtype=object)}))


def test_string_model_with_a_deadline_and_out_buffers(model_factory, engine_for, raw_run, same):
    model = model_factory(
        [helper.make_node("StringSplit", ["x"], ["y", "n"], delimiter=" ")],
        [("x", TP.STRING, [2])],
        [("y", TP.STRING, [2, "m"]), ("n", TP.INT64, [2])],
    )
    feeds = {"x": np.array(["a b", "c"], dtype=object)}
    counts = np.empty(2, np.int64)
    got = engine_for(model).run(feeds, out={"n": counts}, timeout_ms=10_000)
    same(got, raw_run(model, feeds))
    assert got["n"] is counts


# -- element types and shapes at the edges -----------------------------------------------------------


def _reference(model, feeds):
    names = [o.name for o in model.graph.output]
    return dict(zip(names, ReferenceEvaluator(model).run(None, feeds)))


@pytest.mark.parametrize(
    ("nodes", "inputs", "outputs", "feeds"),
    [
        pytest.param(
            [helper.make_node("Not", ["x"], ["y"])], [("x", TP.BOOL, ["n"])], [("y", TP.BOOL, ["n"])],
            {"x": np.array([True, False, True])}, id="bool",
        ),
        pytest.param(
            [helper.make_node("Relu", ["x"], ["y"])], [("x", TP.FLOAT, ["n", 3])], [("y", TP.FLOAT, ["n", 3])],
            {"x": np.zeros((0, 3), np.float32)}, id="zero-size",
        ),
        pytest.param(
            [helper.make_node("Add", ["a", "b"], ["y"])], [("a", TP.FLOAT, []), ("b", TP.FLOAT, [])], [("y", TP.FLOAT, [])],
            {"a": np.array(1.5, np.float32), "b": np.array(2.0, np.float32)}, id="rank-0",
        ),
        pytest.param(
            [helper.make_node("Cast", ["x"], ["y"], to=TP.BFLOAT16)], [("x", TP.FLOAT, ["n"])], [("y", TP.BFLOAT16, ["n"])],
            {"x": np.array([1.5, -2, 3.25, 1e3], np.float32)}, id="to-bfloat16",
        ),
        pytest.param(
            [helper.make_node("Cast", ["x"], ["y"], to=TP.FLOAT)], [("x", TP.BFLOAT16, ["n"])], [("y", TP.FLOAT, ["n"])],
            {"x": np.array([1.5, -2, 3.25], ml_dtypes.bfloat16)}, id="from-bfloat16",
        ),
        pytest.param(
            [helper.make_node("Cast", ["x"], ["y"], to=TP.FLOAT8E4M3FN)], [("x", TP.FLOAT, ["n"])], [("y", TP.FLOAT8E4M3FN, ["n"])],
            {"x": np.array([1.5, -2, 0.25, 7], np.float32)}, id="to-float8e4m3fn",
        ),
        pytest.param(
            [helper.make_node("Cast", ["x"], ["y"], to=TP.FLOAT)], [("x", TP.FLOAT8E5M2, ["n"])], [("y", TP.FLOAT, ["n"])],
            {"x": np.array([1.5, -2, 0.25, 8], ml_dtypes.float8_e5m2)}, id="from-float8e5m2",
        ),
        pytest.param(
            [helper.make_node("Cast", ["x"], ["y"], to=TP.INT4)], [("x", TP.FLOAT, ["n"])], [("y", TP.INT4, ["n"])],
            {"x": np.array([1, -2, 7, -8, 0], np.float32)}, id="to-int4-odd-count",
        ),
        pytest.param(
            [helper.make_node("Cast", ["x"], ["y"], to=TP.FLOAT)], [("x", TP.UINT4, [2, 3])], [("y", TP.FLOAT, [2, 3])],
            {"x": np.array([[1, 2, 15], [0, 9, 4]], ml_dtypes.uint4)}, id="from-uint4",
        ),
        pytest.param(
            [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"])],
            [("x", TP.INT4, ["n"]), ("s", TP.FLOAT, []), ("z", TP.INT4, [])],
            [("y", TP.FLOAT, ["n"])],
            {"x": np.array([-8, -1, 0, 3, 7], ml_dtypes.int4), "s": np.array(0.5, np.float32), "z": np.array(1, ml_dtypes.int4)},
            id="dequantize-int4",
        ),
    ],
)
def test_edge_types_and_shapes_match_the_reference(nodes, inputs, outputs, feeds, model_factory, engine_for, same):
    model = model_factory(nodes, inputs, outputs)
    engine = engine_for(model)
    expected = _reference(model, feeds)
    for _ in range(3):  # first request of a shape, then pool-bound ones
        got = engine.run(feeds)
        same(got, {name: np.asarray(value).astype(got[name].dtype) for name, value in expected.items()})


@pytest.mark.parametrize(("to", "dtype"), [(TP.INT4, ml_dtypes.int4), (TP.BFLOAT16, ml_dtypes.bfloat16)])
def test_out_buffers_of_types_the_numpy_bridge_lacks(to, dtype, model_factory, engine_for):
    model = model_factory([helper.make_node("Cast", ["x"], ["y"], to=to)], [("x", TP.FLOAT, [3])], [("y", to, [3])])
    buffer = np.zeros(3, dtype)
    result = engine_for(model).run({"x": np.array([1, -2, 3], np.float32)}, out={"y": buffer})
    assert result["y"] is buffer
    np.testing.assert_array_equal(buffer.astype(np.float32), [1, -2, 3])
