"""Backend-neutral graph optimization: the same graph, fewer and cheaper nodes, equal outputs.

:class:`GraphOptimizationPass` composes what the ecosystem already does well with the few rewrites
it lacks:

- onnxscript's optimizer (``onnxscript.optimizer.optimize_ir``): constant folding, its default
  rewrite rules (BatchNormalization folded into Conv/ConvTranspose/Gemm, Transpose-Transpose and
  Reshape-Reshape collapsed, no-op Transpose/Reshape/Cast/Expand removed, Pad into Conv...), dead
  code removal, constants lifted to initializers, duplicate initializers merged, common
  subexpression elimination;
- ``onnx_ir.passes.common.IdentityEliminationPass`` (not in onnxscript's list);
- :class:`FoldAffineIntoConvPass` (written here): BatchNormalization, and a per-channel
  ``Add``/``Sub``/``Mul`` by a constant, right after a Conv or Gemm go into its weights and bias.
  onnxscript's affine rules take scalars only, and its BatchNormalization rule renames the nodes it
  fuses (reports and int8 fallbacks name nodes) and refuses shared weights; this one runs first.
- :class:`NoOpReshapePass` (written here): a Reshape whose target shape copies its input shape
  dimension by dimension (``0``, equal sizes, at most one ``-1``) is removed even when the batch
  dimension is symbolic, where onnxscript's folding cannot prove it.

All of it is exact up to float rounding (``PassSpec.exact``): the pass manager holds it to that.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

__all__ = ["GraphOptimizationPass", "FoldAffineIntoConvPass", "NoOpReshapePass", "const_array", "refresh_shapes"]

logger = logging.getLogger(__name__)


# -- helpers shared by the passes of this package ---------------------------------------------------------


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The constant held by ``value`` (initializer or Constant node), or None.

    An initializer that is also a graph input can be overridden at run time: not a constant.
    """
    if value is None or value.is_graph_input():
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def new_initializer(graph: ir.Graph, base: str, array: np.ndarray) -> ir.Value:
    """Register ``array`` as an initializer under a name derived from ``base`` that is not taken."""
    name, i = base, 1
    while name in graph.initializers:
        name, i = f"{base}_{i}", i + 1
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                     const_value=ir.tensor(array, name=name))
    graph.register_initializer(value)
    return value


def refresh_shapes(model: ir.Model) -> None:
    """Forget the inferred shapes of intermediate values and infer them again.

    Passes that change channel counts leave stale shapes behind; runtimes trust them.
    """
    graph = model.graph
    keep = {id(v) for v in graph.inputs} | {id(v) for v in graph.outputs} | {id(v) for v in graph.initializers.values()}
    for node in ir.traversal.RecursiveGraphIterator(graph):
        for value in node.outputs:
            if id(value) not in keep:
                value.shape = None
    try:
        common_passes.ShapeInferencePass()(model)
    except Exception as exc:  # inference helps runtimes; it is not required
        logger.debug("shape inference after a pass failed: %r", exc)


def _single_use(value: ir.Value) -> bool:
    return len(value.uses()) == 1 and not value.is_graph_output()


def _attr_int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_int()


def _attr_float(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_float()


# -- folding per-channel affine ops into Conv / Gemm ---------------------------------------------------------


def _channel_vector(c: np.ndarray, out_rank: int, channels: int, axis: int) -> np.ndarray | None:
    """``c`` as a vector over ``channels`` when it broadcasts along ``axis`` only, else None."""
    if c.ndim > out_rank:
        return None
    shape = (1,) * (out_rank - c.ndim) + c.shape
    for i, size in enumerate(shape):
        if i != axis and size != 1:
            return None
    if shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1), (channels,)).astype(c.dtype)


class FoldAffineIntoConvPass(ir.passes.InPlacePass):
    """``Conv|Gemm -> BatchNormalization | Add|Sub|Mul(constant)`` becomes one Conv|Gemm.

    The constant must broadcast along the output-channel axis only (a scalar, ``[C]``, ``[1,C,1,1]``
    ...), the Conv/Gemm output must feed nothing else, and its weights must be constant. The folded
    weights are new initializers, so weights shared with other nodes stay as they are, and the node
    keeps its name (onnxscript's BatchNormalization rule renames the nodes it fuses and refuses
    shared weights, which is why BatchNormalization is folded here first).
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        changed = True
        while changed:
            changed = False
            for node in list(graph):
                if node.domain != "" or node.graph is not graph:
                    continue
                if node.op_type in ("Add", "Sub", "Mul") and self._try_affine(graph, node):
                    changed = modified = True
                elif node.op_type == "BatchNormalization" and self._try_batch_norm(graph, node):
                    changed = modified = True
        return ir.passes.PassResult(model, modified=modified)

    @staticmethod
    def _foldable_producer(value: ir.Value | None) -> ir.Node | None:
        producer = value.producer() if value is not None else None
        if producer is None or producer.domain != "" or producer.op_type not in ("Conv", "Gemm"):
            return None
        if len(producer.outputs) != 1 or not _single_use(value):
            return None
        return producer

    def _try_batch_norm(self, graph: ir.Graph, node: ir.Node) -> bool:
        if len(node.outputs) != 1 or len(node.inputs) != 5:
            return False
        producer = self._foldable_producer(node.inputs[0])
        params = [const_array(v) for v in node.inputs[1:]]
        if producer is None or any(p is None or p.ndim != 1 for p in params):
            return False
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        scale = gamma / np.sqrt(var + _attr_float(node, "epsilon", 1e-5))
        return self._fold(graph, producer, node, scale=scale, shift=beta - mean * scale)

    def _try_affine(self, graph: ir.Graph, node: ir.Node) -> bool:
        if len(node.inputs) != 2 or node.inputs[0] is None or node.inputs[1] is None:
            return False
        for index in (0, 1):
            if node.op_type == "Sub" and index == 1:
                continue  # c - conv would negate the weights; rare, left alone
            producer = self._foldable_producer(node.inputs[index])
            c = const_array(node.inputs[1 - index])
            if producer is None or c is None or c.dtype.kind != "f":
                continue
            channels = _out_channels(producer)
            rank = 2 if producer.op_type == "Gemm" else _weight_rank(producer)
            v = None if channels is None or rank is None else _channel_vector(c, rank, channels, axis=1)
            if v is None:
                continue
            v = v.astype(np.float64)
            if node.op_type == "Mul":
                return self._fold(graph, producer, node, scale=v, shift=None)
            return self._fold(graph, producer, node, scale=None, shift=v if node.op_type == "Add" else -v)
        return False

    def _fold(self, graph: ir.Graph, producer: ir.Node, node: ir.Node, *, scale: np.ndarray | None,
              shift: np.ndarray | None) -> bool:
        """Replace ``node(producer(x))`` by ``producer'(x)`` computing ``producer(x) * scale + shift``."""
        w = const_array(producer.inputs[1])
        if w is None or w.dtype.kind != "f":
            return False
        bias_value = producer.inputs[2] if len(producer.inputs) > 2 else None
        bias = const_array(bias_value) if bias_value is not None else None
        if bias_value is not None and bias is None:
            return False
        attributes = dict(producer.attributes)
        if producer.op_type == "Conv":
            channels, axis = w.shape[0], 0
            bias = np.zeros(channels) if bias is None else bias.astype(np.float64)
        else:
            trans_b = _attr_int(producer, "transB", 0)
            channels, axis = (w.shape[0] if trans_b else w.shape[1]), (0 if trans_b else 1)
            beta = _attr_float(producer, "beta", 1.0)
            bias = np.zeros(channels) if bias is None else beta * bias.astype(np.float64)
            if bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1):
                return False
            bias = np.broadcast_to(bias.reshape(-1) if bias.ndim else bias, (channels,))
            attributes["beta"] = ir.AttrFloat32("beta", 1.0)
        if bias.shape != (channels,):
            return False
        w_value = producer.inputs[1]
        if scale is not None:
            shape = [1] * w.ndim
            shape[axis] = channels
            w_value = new_initializer(graph, f"{w_value.name}_folded", (w * scale.reshape(shape)).astype(w.dtype))
            bias = bias * scale
        if shift is not None:
            bias = bias + shift
        base = bias_value.name if bias_value is not None else f"{producer.inputs[1].name}_bias"
        b_value = new_initializer(graph, f"{base}_folded", bias.astype(w.dtype))
        new = ir.Node("", producer.op_type, [producer.inputs[0], w_value, b_value],
                      attributes=list(attributes.values()), name=producer.name, num_outputs=1)
        ir.convenience.replace_nodes_and_values(graph, node, [producer, node], [new], [node.outputs[0]],
                                                [new.outputs[0]])
        return True


def _out_channels(node: ir.Node) -> int | None:
    w = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None:
        return None
    if node.op_type == "Conv":
        return w.shape[0]
    return w.shape[0] if _attr_int(node, "transB", 0) else w.shape[1]


def _weight_rank(node: ir.Node) -> int | None:
    w = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    return None if w is None else w.ndim


# -- no-op Reshape with symbolic dimensions -----------------------------------------------------------------


class NoOpReshapePass(ir.passes.InPlacePass):
    """Remove ``Reshape(x, s)`` when ``s`` reproduces ``x``'s shape (symbolic dimensions included).

    Dimension ``i`` of ``s`` reproduces the input when it is ``0`` (copy, with ``allowzero=0``), the
    same fixed size, or the single ``-1`` while every other dimension is reproduced.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.op_type != "Reshape" or node.domain != "" or len(node.inputs) < 2:
                continue
            x, out = node.inputs[0], node.outputs[0]
            target = const_array(node.inputs[1])
            if x is None or x.shape is None or target is None or len(target) != len(x.shape):
                continue
            if _attr_int(node, "allowzero", 0) and 0 in target.tolist():
                continue
            if not _reproduces(list(x.shape), target.tolist()):
                continue
            if out.is_graph_output():
                if x.is_graph_input() or x.is_graph_output():
                    continue
                x.name = out.name  # the graph output keeps its name
            ir.convenience.replace_all_uses_with(out, x, replace_graph_outputs=True)
            graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified=modified)


def _reproduces(shape: list[Any], target: list[int]) -> bool:
    unknown = 0
    for dim, t in zip(shape, target):
        if t == 0:
            continue
        if t == -1:
            unknown += 1
            continue
        if not isinstance(dim, int) or dim != t:
            return False
    return unknown <= 1


# -- the composed pass ------------------------------------------------------------------------------------


class GraphOptimizationPass(ir.passes.InPlacePass):
    """Constant folding, dead code, identities, CSE, BN/affine folding, Transpose/Reshape cancelling.

    ``iterations``: how many rounds of onnxscript's optimizer loop to run (it stops early once a
    round changes nothing).
    """

    def __init__(self, *, iterations: int = 2) -> None:
        super().__init__()
        self.iterations = iterations

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnxscript import optimizer

        before = _signature(model)
        FoldAffineIntoConvPass()(model)  # before onnxscript's rules, which rename the nodes they fuse
        optimizer.optimize_ir(model, num_iterations=self.iterations)
        ir.passes.PassManager(
            [
                common_passes.IdentityEliminationPass(),
                FoldAffineIntoConvPass(),
                NoOpReshapePass(),
                common_passes.RemoveUnusedNodesPass(),
                common_passes.CommonSubexpressionEliminationPass(),
                common_passes.DeduplicateInitializersPass(),
                common_passes.RemoveUnusedNodesPass(),
            ],
            steps=self.iterations,
            early_stop=True,
        )(model)
        common_passes.TopologicalSortPass()(model)
        return ir.passes.PassResult(model, modified=_signature(model) != before)


def _signature(model: ir.Model) -> tuple:
    nodes = tuple((n.op_type, tuple(v.name if v is not None else "" for v in n.inputs)) for n in model.graph)
    return nodes, tuple(sorted(model.graph.initializers))
