"""fp16 and int8: accuracy on the trained digits model, sensitivity fallback, portability of the result."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgecore import zoo
from edgecore.graph import Graph
from edgecore.optimize import OptimizationConfig, optimize
from edgecore.optimize.precision import convert_to_fp16


@pytest.fixture(scope="module")
def digits():
    images, labels = zoo.digits_test_split()
    return zoo.build("digits_cnn"), images, labels


def _op_types(graph: Graph) -> set[str]:
    return {n.op_type for n in graph.model.graph}


def test_fp16_conversion_keeps_the_interface_and_matches_reference():
    model = zoo.build("mobilenet_v2_tiny")
    ir_model = Graph.from_proto(model).copy()
    lowered = convert_to_fp16(ir_model, keep_ops={"Clip"})
    graph = Graph(ir_model)
    onnx.checker.check_model(graph.to_proto(), full_check=True)
    assert lowered > 0
    assert [s.dtype.short for s in graph.inputs] == ["float"] and [s.dtype.short for s in graph.outputs] == ["float"]
    halves = [v for v in graph.model.graph.initializers.values() if v.dtype == onnx.TensorProto.FLOAT16]
    assert halves
    clip = [n for n in graph.model.graph if n.op_type == "Clip"]
    assert all(n.inputs[0].dtype == onnx.TensorProto.FLOAT for n in clip)  # kept in float32, cast around
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    want = ReferenceEvaluator(model).run(None, {"input": x})[0]
    got = ReferenceEvaluator(graph.to_proto()).run(None, {"input": x})[0]
    cos = float(np.sum(want * got) / np.linalg.norm(want) / np.linalg.norm(got))
    assert got.dtype == np.float32 and cos > 0.999


def test_fp16_on_digits_loses_at_most_one_point(digits):
    model, images, labels = digits
    config = OptimizationConfig(enable_mixed_precision=True, calibration_data={"input": images}, labels=labels)
    graph, report = optimize(model, config, backend="cpu_simd")
    record = report.record("fp16")
    assert record.status == "kept", record.reason
    assert report.metric == "top1_points" and record.loss <= 1.0
    assert record.after.bytes < 0.6 * record.before.bytes


def overflow_model() -> onnx.ModelProto:
    """x * 300 * 300 overflows float16 (65504); the product is scaled back down after."""
    inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
             (("a", 300.0), ("b", 300.0), ("c", 1.0 / 90000.0))]
    nodes = [
        helper.make_node("Mul", ["x", "a"], ["m1"], name="m1"),
        helper.make_node("Mul", ["m1", "b"], ["m2"], name="m2"),
        helper.make_node("Mul", ["m2", "c"], ["m3"], name="m3"),
        helper.make_node("Add", ["m3", "x"], ["y"], name="add"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fp16_fallback_keeps_the_overflowing_nodes_in_float32():
    """Checked with onnx.reference, which computes float16 in float16 (onnxruntime's CPU kernels for
    Mul would cast to float32 and hide the overflow)."""
    model = overflow_model()
    x = np.random.default_rng(0).uniform(1.0, 3.0, (16, 8)).astype(np.float32)
    config = OptimizationConfig(enable_graph_optimization=False, enable_mixed_precision=True,
                                calibration_data={"x": x}, keep_fp32_ops=())
    graph, report = optimize(model, config, onnx_reference=True)
    record = report.record("fp16")
    assert record.status == "kept", record.reason
    assert "m2" in record.details["kept_fp32_nodes"]
    assert record.details["fallback_tries"]
    assert record.loss <= report.budget
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    got = ReferenceEvaluator(graph.to_proto()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-2)


pytest.importorskip("onnxruntime.quantization")


def test_int8_on_digits_loses_at_most_one_point_and_stays_portable(digits):
    model, images, labels = digits
    config = OptimizationConfig(enable_quantization=True, calibration_data={"input": images}, labels=labels)
    graph, report = optimize(model, config, backend="cpu_simd")
    record = report.record("int8")
    assert record.status == "kept", record.reason
    assert record.loss <= 1.0
    assert record.details["mode"] == "static" and record.details["activation_type"] == "uint8"
    assert {"QuantizeLinear", "DequantizeLinear"} <= _op_types(graph)
    assert record.after.bytes < 0.4 * record.before.bytes
    onnx.checker.check_model(graph.to_proto(), full_check=True)
    # portable QDQ: the ONNX reference runtime computes the same classes as onnxruntime
    reference = ReferenceEvaluator(graph.to_proto()).run(None, {"input": images[:64]})[0]
    assert np.mean(np.argmax(reference, axis=1) == labels[:64]) > 0.95


def test_int8_without_calibration_data_says_it_calibrated_on_generated_inputs():
    graph, report = optimize(zoo.build("resnet_tiny"), OptimizationConfig(enable_quantization=True, num_samples=4,
                                                                          accuracy_budget=1.0), backend="cpu_simd")
    record = report.record("int8")
    assert report.generated_samples
    assert any("generated" in note for note in record.notes)


def test_int8_fallback_keeps_the_most_sensitive_nodes_in_float():
    model = zoo.build("resnet_tiny")
    base = OptimizationConfig(enable_quantization=True, num_samples=8, accuracy_budget=float("inf"),
                              custom_options={"int8": {"fallback": False}})
    _, report = optimize(model, base, backend="cpu_simd")
    full_loss = report.record("int8").loss
    assert full_loss > 0
    config = OptimizationConfig(enable_quantization=True, num_samples=8, accuracy_budget=full_loss / 3,
                                custom_options={"int8": {"max_tries": 6}})
    graph, report = optimize(model, config, backend="cpu_simd")
    record = report.record("int8")
    assert record.details["fallback_tries"]
    if record.status == "kept":
        assert record.details["kept_float_nodes"]
        assert record.loss <= full_loss / 3
        kept = set(record.details["kept_float_nodes"])
        for node in graph.model.graph:  # a conv kept in float keeps float weights
            if node.name in kept and node.op_type == "Conv":
                assert node.inputs[1].const_value is not None and node.inputs[1].dtype == onnx.TensorProto.FLOAT
    else:
        assert record.status == "rolled_back"


def test_dynamic_int8_for_transformers():
    graph, report = optimize(zoo.build("bert_tiny"), OptimizationConfig(enable_quantization=True, num_samples=2,
                                                                        accuracy_budget=1.0), backend="cpu_simd")
    record = report.record("int8")
    assert record.details["mode"] == "dynamic"
    assert record.status == "kept", record.reason
    assert "MatMulInteger" in _op_types(graph) or "DynamicQuantizeLinear" in _op_types(graph)
