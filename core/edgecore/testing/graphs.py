"""Small generated ONNX graphs that exercise one operator each, with seeded inputs.

Each case builds a model with a dynamic batch dimension "batch" and knows how to make feeds for a
given batch size, so the conformance suite can check numerics, batching and dynamic shapes with the
same graphs.
"""

from __future__ import annotations

from typing import Callable

import attrs
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["OpCase", "OP_CASES", "make_model", "topk_model", "nonzero_model", "unknown_dims_model"]

OPSET = 17


def make_model(nodes, inputs, outputs, initializers=(), name="case") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgecore.testing")
    model.ir_version = 9
    return model


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(array, name)


def _vi(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


@attrs.frozen(kw_only=True)
class OpCase:
    """One generated graph: ``build()`` gives the model, ``feeds(batch, seed)`` its inputs."""

    name: str
    build: Callable[[], onnx.ModelProto]
    input_shapes: dict[str, tuple[int, ...]]  # without the batch dimension
    input_dtype: np.dtype = attrs.field(default=np.dtype(np.float32), converter=np.dtype)

    def feeds(self, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
        rng = _rng(seed)
        return {
            name: rng.standard_normal((batch, *shape)).astype(self.input_dtype)
            for name, shape in self.input_shapes.items()
        }


def _conv() -> onnx.ModelProto:
    rng = _rng(1)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], strides=[1, 1])
    return make_model([node], [_vi("x", ["batch", 3, 10, 10])], [_vi("y", ["batch", 8, 10, 10])], [_init("w", w), _init("b", b)], "conv")


def _gemm() -> onnx.ModelProto:
    rng = _rng(2)
    w = rng.standard_normal((16, 24)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], alpha=0.5, beta=1.0)
    return make_model([node], [_vi("x", ["batch", 16])], [_vi("y", ["batch", 24])], [_init("w", w), _init("b", b)], "gemm")


def _matmul() -> onnx.ModelProto:
    w = _rng(3).standard_normal((12, 5)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    return make_model([node], [_vi("x", ["batch", 7, 12])], [_vi("y", ["batch", 7, 5])], [_init("w", w)], "matmul")


def _unary(op: str, **attrs_) -> Callable[[], onnx.ModelProto]:
    def build() -> onnx.ModelProto:
        node = helper.make_node(op, ["x"], ["y"], **attrs_)
        return make_model([node], [_vi("x", ["batch", 4, 9])], [_vi("y", ["batch", 4, 9])], name=op.lower())

    return build


def _add() -> onnx.ModelProto:
    node = helper.make_node("Add", ["x", "z"], ["y"])
    return make_model([node], [_vi("x", ["batch", 6]), _vi("z", ["batch", 6])], [_vi("y", ["batch", 6])], name="add")


def _reshape() -> onnx.ModelProto:
    shape = np.array([0, -1], dtype=np.int64)
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    return make_model([node], [_vi("x", ["batch", 3, 4])], [_vi("y", ["batch", 12])], [_init("shape", shape)], "reshape")


def _concat() -> onnx.ModelProto:
    node = helper.make_node("Concat", ["x", "z"], ["y"], axis=1)
    return make_model([node], [_vi("x", ["batch", 3]), _vi("z", ["batch", 5])], [_vi("y", ["batch", 8])], name="concat")


def _batchnorm() -> onnx.ModelProto:
    rng = _rng(4)
    params = [
        _init("scale", rng.uniform(0.5, 1.5, 6).astype(np.float32)),
        _init("bias", rng.standard_normal(6).astype(np.float32)),
        _init("mean", rng.standard_normal(6).astype(np.float32)),
        _init("var", rng.uniform(0.5, 2.0, 6).astype(np.float32)),
    ]
    node = helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"], epsilon=1e-5)
    return make_model([node], [_vi("x", ["batch", 6, 5, 5])], [_vi("y", ["batch", 6, 5, 5])], params, "batchnorm")


def _mlp() -> onnx.ModelProto:
    """Several ops chained: Gemm -> Relu -> Gemm -> Softmax (dynamic batch end to end)."""
    rng = _rng(5)
    inits = [
        _init("w1", (rng.standard_normal((10, 32)) * 0.3).astype(np.float32)),
        _init("b1", rng.standard_normal(32).astype(np.float32)),
        _init("w2", (rng.standard_normal((32, 4)) * 0.3).astype(np.float32)),
        _init("b2", rng.standard_normal(4).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["l"]),
        helper.make_node("Softmax", ["l"], ["y"], axis=-1),
    ]
    return make_model(nodes, [_vi("x", ["batch", 10])], [_vi("y", ["batch", 4])], inits, "mlp")


OP_CASES: dict[str, OpCase] = {
    case.name: case
    for case in (
        OpCase(name="Conv", build=_conv, input_shapes={"x": (3, 10, 10)}),
        OpCase(name="Gemm", build=_gemm, input_shapes={"x": (16,)}),
        OpCase(name="MatMul", build=_matmul, input_shapes={"x": (7, 12)}),
        OpCase(name="Relu", build=_unary("Relu"), input_shapes={"x": (4, 9)}),
        OpCase(name="Softmax", build=_unary("Softmax", axis=-1), input_shapes={"x": (4, 9)}),
        OpCase(name="Add", build=_add, input_shapes={"x": (6,), "z": (6,)}),
        OpCase(name="Reshape", build=_reshape, input_shapes={"x": (3, 4)}),
        OpCase(name="Concat", build=_concat, input_shapes={"x": (3,), "z": (5,)}),
        OpCase(name="BatchNormalization", build=_batchnorm, input_shapes={"x": (6, 5, 5)}),
        OpCase(name="MLP", build=_mlp, input_shapes={"x": (10,)}),
    )
}


# -- shapes a backend cannot know before it runs -----------------------------------------------------


def topk_model() -> onnx.ModelProto:
    """TopK whose K is an input: outputs ``values``/``indices`` of shape [batch, K], known only at run time."""
    node = helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=-1)
    return make_model(
        [node],
        [_vi("x", ["batch", 10]), _vi("k", [1], TensorProto.INT64)],
        [_vi("values", ["batch", None]), _vi("indices", ["batch", None], TensorProto.INT64)],
        name="topk",
    )


def nonzero_model() -> onnx.ModelProto:
    """NonZero: output [rank, count] with count data-dependent (count may be 0)."""
    node = helper.make_node("NonZero", ["x"], ["y"])
    return make_model([node], [_vi("x", ["batch", 6])], [_vi("y", [2, None], TensorProto.INT64)], name="nonzero")


def unknown_dims_model() -> onnx.ModelProto:
    """Sigmoid on ``x[-1, 4, -1]``: ``dim_value: -1`` as paddle2onnx and older exporters write any size."""
    model = make_model(
        [helper.make_node("Sigmoid", ["x"], ["y"])], [_vi("x", [1, 4, 1])], [_vi("y", [1, 4, 1])], name="minus_one"
    )
    for value in (model.graph.input[0], model.graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        dims[0].dim_value = -1
        dims[2].dim_value = -1
    return model
