"""Binding arrays to OpenVINO's ports where the plain zero-copy path goes wrong (see ``binding``):
rank-0 inputs beside dynamic ones, outputs that are an input, inputs OpenVINO drops or renames,
read-only arrays, bfloat16. Each model is checked against ``onnx.reference`` on the same inputs,
over several calls (the first call of a signature and the bound path after it differ).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

pytest.importorskip("openvino", reason="openvino is not installed")

from edgecore import Engine, EngineConfig  # noqa: E402


def _model(nodes, inputs, outputs, opset: int = 21):
    graph = helper.make_graph(nodes, "binding", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _check(model, feeds: dict[str, np.ndarray], calls: int = 3) -> None:
    want = ReferenceEvaluator(model).run(None, feeds)
    with Engine(EngineConfig(backend="openvino", device="cpu")).load(model.SerializeToString()) as engine:
        for _ in range(calls):
            got = engine.run(feeds)
            for value, expected in zip(model.graph.output, want):
                assert got[value.name].shape == expected.shape, value.name
                assert got[value.name].dtype == expected.dtype, value.name
                np.testing.assert_allclose(got[value.name].astype(np.float64), expected.astype(np.float64), rtol=1e-2)


def test_scalar_input_beside_a_dynamic_batch():
    model = _model(
        [helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT), helper.make_node("Mul", ["x", "sf"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("s", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    for batch in (1, 4):
        _check(model, {"x": np.arange(batch * 3, dtype=np.float32).reshape(batch, 3), "s": np.array(16, np.int64)})


@pytest.mark.parametrize("op", ["Identity", "Sum", "Max"])
def test_an_output_that_is_the_input_comes_back_with_its_values(op):
    model = _model(
        [helper.make_node(op, ["x"], ["y"]), helper.make_node("Relu", ["x"], ["z"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])],
    )
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    before = x.copy()
    _check(model, {"x": x})
    np.testing.assert_array_equal(x, before)  # the caller's input is never written


def test_an_input_no_node_reads():
    model = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("unused", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    _check(model, {"unused": np.ones(2, np.float32), "x": np.full((2, 3), -2.0, np.float32)})


def test_read_only_and_strided_inputs():
    model = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
    )
    read_only = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    read_only.flags.writeable = False
    _check(model, {"x": read_only})
    _check(model, {"x": np.linspace(-1, 1, 24, dtype=np.float32).reshape(3, 8)[:, ::2]})


def test_bfloat16_inputs_and_outputs():
    model = _model(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT),
         helper.make_node("Cast", ["y"], ["z"], to=TensorProto.BFLOAT16)],
        [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("z", TensorProto.BFLOAT16, [2, 3])],
    )
    _check(model, {"x": np.array([[0.5, -1.25, 3.0], [7.0, 0.0, -0.125]], dtype=ml_dtypes.bfloat16)})
