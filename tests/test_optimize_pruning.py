"""Structured and unstructured pruning, checked against onnx.reference on the unpruned graph.

Hand-built graphs give some channels all-zero weights: those are the ones structured pruning removes
first, so the pruned graph must compute exactly what the original does, through residual adds,
concats, depthwise convs, squeeze-excitation scales and flattens.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgecore.graph import Graph
from edgecore.optimize import OptimizationConfig, optimize
from edgecore.optimize.channels import analyze
from edgecore.optimize.pruning import StructuredPruningPass, UnstructuredPruningPass, kept_count

RNG = np.random.default_rng(7)


def _conv_weight(out: int, inp: int, k: int = 1, zero: tuple[int, ...] = ()) -> np.ndarray:
    w = RNG.normal(0, 0.5, (out, inp, k, k)).astype(np.float32) + 0.3  # no near-zero rows by chance
    w[list(zero)] = 0
    return w


def _bias(out: int, zero: tuple[int, ...] = ()) -> np.ndarray:
    b = RNG.normal(0, 0.1, out).astype(np.float32)
    b[list(zero)] = 0
    return b


def _model(nodes, inits: dict[str, np.ndarray], x_shape, y_shape) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _prune(model: onnx.ModelProto, ratio: float, **options) -> tuple[Graph, StructuredPruningPass]:
    ir_model = Graph.from_proto(model).copy()
    pass_ = StructuredPruningPass(ratio, options={"min_channels": 1, **options})
    pass_(ir_model)
    pruned = Graph(ir_model)
    onnx.checker.check_model(pruned.to_proto(), full_check=True)
    return pruned, pass_


def _same_outputs(original: onnx.ModelProto, pruned: Graph, x: np.ndarray) -> None:
    want = ReferenceEvaluator(original).run(None, {"x": x})[0]
    got = ReferenceEvaluator(pruned.to_proto()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _weight_shape(graph: Graph, node_name: str, index: int = 1) -> tuple[int, ...]:
    node = next(n for n in graph.model.graph if n.name == node_name)
    return tuple(node.inputs[index].const_value.shape)


def residual_model() -> onnx.ModelProto:
    """conv_a -> relu -> conv_b, then conv_a + conv_b (a residual group), then conv_c."""
    zero = (5, 6, 7)
    inits = {
        "wa": _conv_weight(8, 3, 3, zero), "ba": _bias(8, zero),
        "wb": _conv_weight(8, 8, 1, zero), "bb": _bias(8, zero),
        "wc": _conv_weight(4, 8, 1), "bc": _bias(4),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "wb", "bb"], ["b"], name="conv_b"),
        helper.make_node("Add", ["a", "b"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["rs"], name="relu_s"),
        helper.make_node("Conv", ["rs", "wc", "bc"], ["y"], name="conv_c"),
    ]
    return _model(nodes, inits, ["n", 3, 6, 6], ["n", 4, 6, 6])


def test_residual_group_is_left_whole_by_default_and_pruned_together_on_request():
    model = residual_model()
    plan = analyze(Graph.from_proto(model).model.graph)
    tied = [g for g in plan.groups if g.tied]
    assert len(tied) == 1 and {p.name for p in tied[0].producers} == {"conv_a", "conv_b"} and tied[0].residual
    x = RNG.normal(size=(2, 3, 6, 6)).astype(np.float32)

    skipped, pass_ = _prune(model, 0.375)
    assert pass_.summary["groups_pruned"] == 0
    assert _weight_shape(skipped, "conv_a") == (8, 3, 3, 3)

    pruned, pass_ = _prune(model, 0.375, residual="prune")
    assert pass_.summary["groups_pruned"] == 1
    assert _weight_shape(pruned, "conv_a") == (5, 3, 3, 3)
    assert _weight_shape(pruned, "conv_b") == (5, 5, 1, 1)
    assert _weight_shape(pruned, "conv_c") == (4, 5, 1, 1)
    _same_outputs(model, pruned, x)


def test_concat_parts_are_pruned_and_the_consumer_follows_the_offsets():
    inits = {
        "wa": _conv_weight(4, 3, 1, (3,)), "ba": _bias(4, (3,)),
        "wb": _conv_weight(6, 3, 1, (0, 1)), "bb": _bias(6, (0, 1)),
        "wc": _conv_weight(2, 10, 1), "bc": _bias(2),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a"),
        helper.make_node("Conv", ["x", "wb", "bb"], ["b"], name="conv_b"),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Relu", ["b"], ["rb"], name="relu_b"),
        helper.make_node("Concat", ["ra", "rb"], ["cat"], axis=1, name="cat"),
        helper.make_node("Conv", ["cat", "wc", "bc"], ["y"], name="conv_c"),
    ]
    model = _model(nodes, inits, ["n", 3, 5, 5], ["n", 2, 5, 5])
    pruned, pass_ = _prune(model, 0.34)
    assert _weight_shape(pruned, "conv_a") == (3, 3, 1, 1)
    assert _weight_shape(pruned, "conv_b") == (4, 3, 1, 1)
    assert _weight_shape(pruned, "conv_c") == (2, 7, 1, 1)
    _same_outputs(model, pruned, RNG.normal(size=(2, 3, 5, 5)).astype(np.float32))


def test_depthwise_conv_passes_channels_through():
    zero = (2,)
    dw_bias = _bias(8, zero)
    inits = {
        "wa": _conv_weight(8, 3, 1, zero), "ba": _bias(8, zero),
        "wd": RNG.normal(0, 0.5, (8, 1, 3, 3)).astype(np.float32), "bd": dw_bias,
        "wc": _conv_weight(3, 8, 1), "bc": _bias(3),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a"),
        helper.make_node("Clip", ["a"], ["ra"], name="relu6"),
        helper.make_node("Conv", ["ra", "wd", "bd"], ["d"], group=8, pads=[1, 1, 1, 1], name="dw"),
        helper.make_node("Relu", ["d"], ["rd"], name="relu_d"),
        helper.make_node("Conv", ["rd", "wc", "bc"], ["y"], name="conv_c"),
    ]
    model = _model(nodes, inits, ["n", 3, 5, 5], ["n", 3, 5, 5])
    pruned, _ = _prune(model, 0.125)
    assert _weight_shape(pruned, "dw") == (7, 1, 3, 3)
    dw = next(n for n in pruned.model.graph if n.name == "dw")
    assert dw.attributes["group"].as_int() == 7
    assert _weight_shape(pruned, "conv_c") == (3, 7, 1, 1)
    _same_outputs(model, pruned, RNG.normal(size=(1, 3, 5, 5)).astype(np.float32))


def test_squeeze_excitation_scale_ties_its_conv_to_the_features():
    zero = (1, 4)
    fc = RNG.normal(0, 0.5, (6, 6, 1, 1)).astype(np.float32) + 0.3
    fc[list(zero)] = 0
    inits = {
        "wa": _conv_weight(6, 3, 1, zero), "ba": _bias(6, zero), "wf": fc, "bf": _bias(6),
        "wc": _conv_weight(2, 6, 1), "bc": _bias(2),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a"),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("GlobalAveragePool", ["ra"], ["p"], name="pool"),
        helper.make_node("Conv", ["p", "wf", "bf"], ["f"], name="se_fc"),
        helper.make_node("Sigmoid", ["f"], ["s"], name="sigmoid"),
        helper.make_node("Mul", ["ra", "s"], ["m"], name="scale"),
        helper.make_node("Conv", ["m", "wc", "bc"], ["y"], name="conv_c"),
    ]
    model = _model(nodes, inits, ["n", 3, 4, 4], ["n", 2, 4, 4])
    pruned, pass_ = _prune(model, 0.34)
    assert pass_.summary["groups_pruned"] == 1  # conv_a and se_fc together: one group, not residual
    assert _weight_shape(pruned, "conv_a")[0] == _weight_shape(pruned, "se_fc")[0] == 4
    _same_outputs(model, pruned, RNG.normal(size=(2, 3, 4, 4)).astype(np.float32))


def test_flatten_into_gemm_drops_the_channel_blocks():
    inits = {
        "wa": _conv_weight(8, 1, 3, (1, 6)), "ba": _bias(8, (1, 6)),
        "wg": RNG.normal(0, 0.2, (10, 8 * 4 * 4)).astype(np.float32), "bg": _bias(10),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("MaxPool", ["ra"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1, name="fc"),
    ]
    model = _model(nodes, inits, ["n", 1, 8, 8], ["n", 10])
    pruned, _ = _prune(model, 0.25)
    assert _weight_shape(pruned, "fc") == (10, 6 * 16)
    _same_outputs(model, pruned, RNG.normal(size=(3, 1, 8, 8)).astype(np.float32))


def test_graph_outputs_and_reshapes_freeze_channels():
    inits = {"wa": _conv_weight(4, 3, 1, (0,)), "shape": np.array([0, 2, -1], np.int64)}
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a"),
        helper.make_node("Reshape", ["a", "shape"], ["y"], name="reshape"),
    ]
    model = _model(nodes, inits, [1, 3, 2, 2], [1, 2, 8])
    plan = analyze(Graph.from_proto(model).model.graph)
    assert all(g.frozen for g in plan.groups)
    ir_model = Graph.from_proto(model).copy()
    assert not StructuredPruningPass(0.5)(ir_model).modified


def test_kept_count_rounds_to_simd_blocks_only_for_wide_layers():
    assert kept_count(64, 0.3, 8, 4) == 48
    assert kept_count(512, 0.3, 8, 4) == 360
    assert kept_count(16, 0.3, 8, 4) == 11  # too narrow to round
    assert kept_count(5, 0.9, 8, 4) == 4  # never below min_channels


def test_unstructured_pruning_zeroes_the_smallest_weights():
    from edgecore import zoo

    model = zoo.build("digits_cnn")
    ir_model = Graph.from_proto(model).copy()
    pass_ = UnstructuredPruningPass(0.5)
    assert pass_(ir_model).modified
    assert pass_.summary["sparsity"] == pytest.approx(0.5, abs=0.01)
    pruned = Graph(ir_model)
    for node in pruned.model.graph:
        if node.op_type in ("Conv", "Gemm") and node.inputs[1].const_value.size >= 256:
            w = node.inputs[1].const_value.numpy()
            assert np.mean(w == 0) >= 0.5
    out = ReferenceEvaluator(pruned.to_proto()).run(None, {"input": np.zeros((1, 1, 8, 8), np.float32)})[0]
    assert out.shape == (1, 10)


@pytest.mark.parametrize("name", ["resnet_tiny", "mobilenet_v2_tiny", "efficientnet_tiny", "bert_tiny"])
def test_zoo_tiny_structured_pruning_shrinks_and_runs(name):
    from edgecore import zoo

    config = OptimizationConfig(enable_pruning=True, pruning_ratio=0.3, accuracy_budget=float("inf"), num_samples=2,
                                custom_options={"structured_pruning": {"residual": "prune"}})
    graph, report = optimize(zoo.build(name), config, onnx_reference=True)
    record = report.record("structured_pruning")
    assert record.status == "kept", record.reason
    assert record.after.parameters < record.before.parameters
    assert record.details["groups_pruned"] > 0
    onnx.checker.check_model(graph.to_proto(), full_check=True)
    assert record.vs_original is not None and np.isfinite(record.vs_original.cosine)


def test_bias_compensation_restores_a_constant_channel_exactly():
    """A channel with zero weights but a positive bias is a constant after Relu: pruning it and moving
    its contribution into the consumer's bias (1x1 conv: no borders) changes nothing."""
    wa = _conv_weight(6, 3, 1, (2,))
    ba = _bias(6)
    ba[2] = 0.5
    inits = {"wa": wa, "ba": ba, "wc": _conv_weight(4, 6, 1), "bc": _bias(4)}
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a"),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "wc", "bc"], ["y"], name="conv_c"),
    ]
    model = _model(nodes, inits, ["n", 3, 5, 5], ["n", 4, 5, 5])
    x = RNG.normal(size=(4, 3, 5, 5)).astype(np.float32)
    results = {}
    for compensate in (False, True):
        config = OptimizationConfig(enable_graph_optimization=False, enable_pruning=True, pruning_ratio=0.17,
                                    calibration_data={"x": x}, accuracy_budget=float("inf"),
                                    custom_options={"structured_pruning": {"min_channels": 1,
                                                                           "compensate": compensate}})
        graph, report = optimize(model, config, onnx_reference=True)
        assert _weight_shape(graph, "conv_c") == (4, 5, 1, 1)
        results[compensate] = report.record("structured_pruning")
    assert results[True].details["bias_compensation"] is True
    assert results[True].vs_original.max_rel_error < 1e-5 < results[False].vs_original.max_rel_error
