"""Fusions (linear + bias, erf-GELU, attention) change the kernels, not the results."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgecore import Engine, EngineConfig
from edgecore.graph import Graph
from edgecore.selection import load_graph
from edgecore.testing import make_model, reference_outputs
from edgecore_torch.lowering import lower


def _run(graph, feeds, **options):
    config = EngineConfig(backend="torch", device="cpu", num_threads=1, custom_options=options)
    with Engine(config).load(graph) as engine:
        return engine.run(feeds)


def test_bert_layers_fuse_and_agree_with_the_unfused_lowering():
    graph = load_graph("zoo:bert_tiny")
    program = lower(graph)
    assert program.fused == {"attention": 2, "gelu": 2, "linear": 13}  # 2 layers: 6 linears each, + pooler
    assert not [n for n in program.nodes if n.op_type in ("Erf", "Softmax")]
    rng = np.random.default_rng(0)
    feeds = {
        "input_ids": rng.integers(0, 1000, (2, 9)).astype(np.int64),
        "attention_mask": (rng.random((2, 9)) > 0.2).astype(np.int64),
        "token_type_ids": rng.integers(0, 2, (2, 9)).astype(np.int64),
    }
    fused, plain = _run(graph, feeds), _run(graph, feeds, fuse=False)
    for name in plain:
        np.testing.assert_allclose(fused[name], plain[name], rtol=1e-5, atol=1e-5)


def _gelu_model(order: str):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])
    consts = {
        "sqrt2": np.array(np.sqrt(2.0), np.float32), "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32),
    }
    if order == "torch":  # x * (1 + erf(x / sqrt2)) * 0.5, as torch.onnx.export writes F.gelu
        nodes = [
            helper.make_node("Div", ["x", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
            helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["x", "a"], ["m"]),
            helper.make_node("Mul", ["m", "half"], ["y"]),
        ]
    else:  # (0.5 * x) * (1 + erf(x * 1/sqrt2)), as the zoo's BERT writes it
        consts["k"] = np.array(1 / np.sqrt(2.0), np.float32)
        nodes = [
            helper.make_node("Mul", ["x", "k"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
            helper.make_node("Add", ["one", "e"], ["a"]), helper.make_node("Mul", ["x", "half"], ["h"]),
            helper.make_node("Mul", ["h", "a"], ["y"]),
        ]
    inits = [numpy_helper.from_array(v, k) for k, v in consts.items()]
    return make_model(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])], inits)


@pytest.mark.parametrize("order", ["torch", "zoo"])
def test_gelu_written_either_way_becomes_one_call(order):
    model = _gelu_model(order)
    program = lower(Graph.load(model))
    assert [n.op_type for n in program.nodes] == ["FusedGelu"]
    feeds = {"x": np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32) * 3}
    np.testing.assert_allclose(_run(model, feeds)["y"], reference_outputs(model, feeds)["y"], rtol=1e-6, atol=1e-6)


def test_a_shared_intermediate_is_not_fused():
    """The MatMul's product is also a graph output: fusing would lose it."""
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    b = numpy_helper.from_array(np.arange(3, dtype=np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["p"]), helper.make_node("Add", ["p", "b"], ["y"])]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("p", "y")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])], outs, [w, b])
    assert lower(Graph.load(model)).fused["linear"] == 0
    feeds = {"x": np.ones((2, 4), np.float32)}
    got = _run(model, feeds)
    np.testing.assert_allclose(got["y"], reference_outputs(model, feeds)["y"])
