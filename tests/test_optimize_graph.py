"""Graph optimization: fewer nodes, outputs equal to onnx.reference on the unoptimized graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgecore.graph import Graph
from edgecore.optimize import OptimizationConfig, optimize
from edgecore.optimize.graph_passes import FoldAffineIntoConvPass, GraphOptimizationPass

pytest.importorskip("onnxscript")

RNG = np.random.default_rng(0)


def _init(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32 if np.asarray(array).dtype.kind == "f"
                                              else np.asarray(array).dtype), name)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _bn(prefix: str, c: int) -> list[onnx.TensorProto]:
    return [
        _init(f"{prefix}.g", RNG.uniform(0.5, 1.5, c)), _init(f"{prefix}.b", RNG.normal(0, 0.1, c)),
        _init(f"{prefix}.m", RNG.normal(0, 0.1, c)), _init(f"{prefix}.v", RNG.uniform(0.5, 2.0, c)),
    ]


def _ops(graph: Graph) -> list[str]:
    return [n.op_type for n in graph.model.graph]


def _check_against_reference(original: onnx.ModelProto, optimized: Graph, feeds: dict[str, np.ndarray]) -> None:
    want = ReferenceEvaluator(original).run(None, feeds)
    got = ReferenceEvaluator(optimized.to_proto()).run(None, feeds)
    assert len(want) == len(got)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def _run_pass(model: onnx.ModelProto) -> Graph:
    graph = Graph.from_proto(model)
    ir_model = graph.copy()
    GraphOptimizationPass()(ir_model)
    optimized = Graph(ir_model)
    onnx.checker.check_model(optimized.to_proto(), full_check=True)
    return optimized


def conv_chain_model() -> onnx.ModelProto:
    """Conv-BN-Relu, Conv-Add-Mul (per channel), Transpose pair, Reshape round trip, duplicate Relus."""
    c = 6
    inits = [
        _init("w1", RNG.normal(0, 0.3, (c, 3, 3, 3))), _init("b1", RNG.normal(0, 0.1, c)), *_bn("bn", c),
        _init("w2", RNG.normal(0, 0.3, (c, c, 1, 1))), _init("add_c", RNG.normal(0, 0.1, (1, c, 1, 1))),
        _init("mul_s", RNG.uniform(0.5, 1.5, (c, 1, 1))),
        _init("s1", np.array([0, c, 64], np.int64)), _init("s2", np.array([0, c, 8, 8], np.int64)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "bn.g", "bn.b", "bn.m", "bn.v"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Add", ["c2", "add_c"], ["a2"], name="add2"),
        helper.make_node("Mul", ["mul_s", "a2"], ["m2"], name="mul2"),
        helper.make_node("Transpose", ["m2"], ["t1"], perm=[0, 2, 3, 1], name="t1"),
        helper.make_node("Transpose", ["t1"], ["t2"], perm=[0, 3, 1, 2], name="t2"),
        helper.make_node("Reshape", ["t2", "s1"], ["rs1"], name="rs1"),
        helper.make_node("Reshape", ["rs1", "s2"], ["rs2"], name="rs2"),
        helper.make_node("Relu", ["rs2"], ["ra"], name="ra"),
        helper.make_node("Relu", ["rs2"], ["rb"], name="rb"),
        helper.make_node("Add", ["ra", "rb"], ["sum"], name="sum"),
        helper.make_node("Identity", ["sum"], ["y"], name="out"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", c, 8, 8])],
        inits,
    )


def test_graph_pass_folds_cancels_and_matches_reference_with_dynamic_batch():
    model = conv_chain_model()
    optimized = _run_pass(model)
    ops = _ops(optimized)
    assert ops.count("Conv") == 2
    for gone in ("BatchNormalization", "Transpose", "Reshape", "Identity", "Mul"):
        assert gone not in ops, ops
    assert ops.count("Relu") == 2  # the duplicate Relu merged (CSE)
    assert ops.count("Add") == 1  # the per-channel Add went into conv2's bias
    assert [s.name for s in optimized.outputs] == ["y"] and [s.name for s in optimized.inputs] == ["x"]
    assert {n.name for n in optimized.model.graph if n.op_type == "Conv"} == {"conv1", "conv2"}
    for batch in (1, 3):
        _check_against_reference(model, optimized, {"x": RNG.normal(size=(batch, 3, 8, 8)).astype(np.float32)})


def test_shared_weights_get_their_own_folded_copies():
    c = 4
    inits = [_init("w", RNG.normal(0, 0.3, (c, 3, 3, 3))), *_bn("bna", c), *_bn("bnb", c)]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["ca"], pads=[1, 1, 1, 1], name="conva"),
        helper.make_node("Conv", ["x", "w"], ["cb"], pads=[1, 1, 1, 1], name="convb"),
        helper.make_node("BatchNormalization", ["ca", "bna.g", "bna.b", "bna.m", "bna.v"], ["ya"], name="bna"),
        helper.make_node("BatchNormalization", ["cb", "bnb.g", "bnb.b", "bnb.m", "bnb.v"], ["yb"], name="bnb"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 6, 6])],
        [helper.make_tensor_value_info("ya", TensorProto.FLOAT, ["n", c, 6, 6]),
         helper.make_tensor_value_info("yb", TensorProto.FLOAT, ["n", c, 6, 6])],
        inits,
    )
    optimized = _run_pass(model)
    assert _ops(optimized) == ["Conv", "Conv"]
    weights = {n.inputs[1].name for n in optimized.model.graph}
    assert len(weights) == 2  # two different folded weights, the shared original gone
    _check_against_reference(model, optimized, {"x": RNG.normal(size=(2, 3, 6, 6)).astype(np.float32)})


def test_conv_output_used_twice_is_not_folded():
    c = 3
    inits = [_init("w", RNG.normal(0, 0.3, (c, 2, 1, 1))), *_bn("bn", c)]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], name="conv"),
        helper.make_node("BatchNormalization", ["conv", "bn.g", "bn.b", "bn.m", "bn.v"], ["y"], name="bn"),
        helper.make_node("Relu", ["conv"], ["z"], name="relu"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 4, 4]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, c, 4, 4])],
        inits,
    )
    optimized = _run_pass(model)
    assert "BatchNormalization" in _ops(optimized)
    _check_against_reference(model, optimized, {"x": RNG.normal(size=(1, 2, 4, 4)).astype(np.float32)})


def test_gemm_with_bias_add_mul_and_batchnorm_folds_into_one_gemm():
    n_out = 5
    inits = [
        _init("w", RNG.normal(0, 0.3, (n_out, 7))), _init("b", RNG.normal(0, 0.1, n_out)),
        _init("c", RNG.normal(0, 0.1, n_out)), _init("s", RNG.uniform(0.5, 1.5, (1, n_out))), *_bn("bn", n_out),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1, beta=0.5, name="fc"),
        helper.make_node("Add", ["g", "c"], ["a"], name="add"),
        helper.make_node("Sub", ["a", "c"], ["d"], name="sub"),
        helper.make_node("Mul", ["d", "s"], ["m"], name="mul"),
        helper.make_node("BatchNormalization", ["m", "bn.g", "bn.b", "bn.m", "bn.v"], ["y"], name="bn"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", n_out])],
        inits,
    )
    graph = Graph.from_proto(model)
    ir_model = graph.copy()
    assert FoldAffineIntoConvPass()(ir_model).modified
    optimized = Graph(ir_model)
    assert _ops(optimized) == ["Gemm"]
    _check_against_reference(model, optimized, {"x": RNG.normal(size=(4, 7)).astype(np.float32)})


def test_graph_pass_keeps_graph_input_passthrough_and_broadcast_adds():
    """An Add whose constant is not per-channel ([H, W]) must stay; an Identity from input to output too."""
    inits = [_init("w", RNG.normal(0, 0.3, (2, 2, 1, 1))), _init("hw", RNG.normal(0, 1, (4, 4)))]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Add", ["c", "hw"], ["y"], name="add"),
        helper.make_node("Identity", ["x"], ["x_copy"], name="copy"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, 4, 4]),
         helper.make_tensor_value_info("x_copy", TensorProto.FLOAT, ["n", 2, 4, 4])],
        inits,
    )
    optimized = _run_pass(model)
    assert "Add" in _ops(optimized)
    assert [s.name for s in optimized.outputs] == ["y", "x_copy"]
    _check_against_reference(model, optimized, {"x": RNG.normal(size=(2, 2, 4, 4)).astype(np.float32)})


@pytest.mark.parametrize("name", ["resnet_tiny", "mobilenet_v2_tiny", "efficientnet_tiny", "bert_tiny"])
def test_zoo_tiny_graph_optimization_matches_reference(name):
    from edgecore import zoo

    model = zoo.build(name)
    graph, report = optimize(model, OptimizationConfig(num_samples=2), onnx_reference=True)
    record = report.record("graph_optimization")
    assert record.status == "kept", record.reason
    assert graph.num_nodes < Graph.from_proto(model, check=False).num_nodes
    assert "BatchNormalization" not in _ops(graph)
    inputs = Graph.from_proto(model, check=False).inputs
    rng = np.random.default_rng(1)
    if name.startswith("bert"):
        values = {"input_ids": rng.integers(0, 100, (2, 12)), "attention_mask": np.ones((2, 12)),
                  "token_type_ids": np.zeros((2, 12))}
        feeds = {s.name: values[s.name].astype(np.int64) for s in inputs}
    else:
        feeds = {"input": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)}
    _check_against_reference(model, graph, feeds)
