"""From an edgecore Graph (``onnx_ir``) to a :class:`Program`: plain nodes and host constants.

What happens once per model, before any input is seen:

* model-local functions are inlined (``onnx_ir.passes.common.InlinePass``);
* attributes become Python values (tensors as host torch tensors, subgraphs as :class:`Subgraph`);
* initializers and ``Constant`` nodes become host tensors sharing the model's memory;
* Conv -> BatchNormalization pairs with constant parameters are folded into the convolution;
* every node whose inputs are all constants is evaluated now (constant folding), so per-signature
  work is left with the shape arithmetic that depends on input shapes;
* linear layers, GELU and attention patterns are fused (:mod:`edgecore_torch.fusion`).

:func:`unsupported_ops` lists what the registry cannot lower, attributes included
(``Resize(antialias=1)``), so that the engine raises UnsupportedOperatorError before compiling.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import attrs
import numpy as np
import onnx_ir as ir
import torch

from edgecore.backend import op_name
from edgecore.graph import Graph
from edgecore_torch.convert import from_numpy
from edgecore_torch.ops import CONTROL_FLOW, OpContext, lookup

logger = logging.getLogger(__name__)

__all__ = ["Node", "Subgraph", "Program", "lower", "unsupported_ops", "evaluate_known"]

_NONDETERMINISTIC = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"})


@attrs.frozen(kw_only=True)
class Node:
    op_type: str
    domain: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = attrs.field(hash=False)
    opset: int


@attrs.frozen(kw_only=True)
class Subgraph:
    """A body graph (If branches, Loop bodies): its inputs, nodes, outputs and own constants."""

    inputs: tuple[str, ...] = ()
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    constants: Mapping[str, torch.Tensor] = attrs.field(hash=False)


@attrs.frozen(kw_only=True)
class Program:
    """A model ready for the recorder: inputs, outputs, nodes left to run, and host constants."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    nodes: tuple[Node, ...]
    constants: Mapping[str, torch.Tensor] = attrs.field(hash=False)
    folded_batchnorms: int = 0
    folded_nodes: int = 0
    fused: Mapping[str, int] = attrs.field(factory=dict, hash=False)


def _tensor(value: Any) -> torch.Tensor:
    return from_numpy(np.asarray(value.numpy()))


def _attr(attr: Any, opsets: Mapping[str, int]) -> Any:
    kind = attr.type
    if kind == ir.AttributeType.TENSOR:
        return _tensor(attr.value)
    if kind == ir.AttributeType.TENSORS:
        return [_tensor(t) for t in attr.value]
    if kind == ir.AttributeType.GRAPH:
        return _subgraph(attr.value, opsets)
    if kind == ir.AttributeType.GRAPHS:
        return [_subgraph(g, opsets) for g in attr.value]
    if kind in (ir.AttributeType.INTS, ir.AttributeType.FLOATS, ir.AttributeType.STRINGS):
        return list(attr.value)
    return attr.value


def _nodes(graph: ir.Graph, opsets: Mapping[str, int]) -> list[Node]:
    nodes = []
    for node in graph:
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        nodes.append(
            Node(
                op_type=node.op_type,
                domain=domain,
                name=node.name or "",
                inputs=tuple(v.name if v is not None else "" for v in node.inputs),
                outputs=tuple(v.name or "" for v in node.outputs),
                attrs={name: _attr(a, opsets) for name, a in node.attributes.items()},
                opset=opsets.get(domain, opsets.get("", 0)),
            )
        )
    return nodes


def _constants(graph: ir.Graph) -> dict[str, torch.Tensor]:
    return {name: _tensor(v.const_value) for name, v in graph.initializers.items() if v.const_value is not None}


def _subgraph(graph: ir.Graph, opsets: Mapping[str, int]) -> Subgraph:
    return Subgraph(
        inputs=tuple(v.name for v in graph.inputs),
        nodes=tuple(_nodes(graph, opsets)),
        outputs=tuple(v.name for v in graph.outputs),
        constants=_constants(graph),
    )


def _inlined(graph: Graph) -> ir.Model:
    if not graph.model.functions:
        return graph.model
    from onnx_ir.passes.common import InlinePass

    model = graph.copy()
    InlinePass()(model)
    return model


def lower(graph: Graph, *, fold_batchnorm: bool = True, fold_constants: bool = True, fuse: bool = True) -> Program:
    """The :class:`Program` of ``graph`` (raises the op's error if constant folding fails)."""
    model = _inlined(graph)
    opsets = {("" if k == "ai.onnx" else k): v for k, v in model.opset_imports.items()}
    constants = _constants(model.graph)
    nodes = _nodes(model.graph, opsets)
    outputs = tuple(v.name for v in model.graph.outputs)
    folded_bn = 0
    if fold_batchnorm:
        nodes, folded_bn = _fold_batchnorms(nodes, constants, set(outputs))
    folded = 0
    if fold_constants:
        nodes, folded = _fold_constants(nodes, constants)
    fused: dict[str, int] = {}
    if fuse:
        from edgecore_torch.fusion import fuse as fuse_nodes

        nodes, fused = fuse_nodes(nodes, constants, set(outputs))
    inputs = tuple(spec.name for spec in graph.inputs)
    return Program(
        inputs=inputs,
        outputs=outputs,
        nodes=tuple(nodes),
        constants=constants,
        folded_batchnorms=folded_bn,
        folded_nodes=folded,
        fused=fused,
    )


# -- constant folding -------------------------------------------------------------------------------


def evaluate_known(node: Node, values: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Run ``node`` on host tensors (all of its inputs known); returns one tensor per output."""
    op = lookup(node.domain, node.op_type)
    cpu = torch.device("cpu")
    ctx = OpContext(node, values, [None] * len(values), [True] * len(values), cpu, None)
    fn = op.build(ctx)
    args = [None if (i in ctx.consumed or v is None) else v for i, v in enumerate(values)]
    result = fn(*args)
    return as_outputs(result, len(node.outputs))


def as_outputs(result: Any, count: int) -> list[Any]:
    if isinstance(result, torch.Tensor):
        return [result] + [None] * (count - 1)
    result = list(result)
    return result + [None] * (count - len(result))


def _foldable(node: Node, constants: Mapping[str, torch.Tensor]) -> bool:
    if node.op_type in _NONDETERMINISTIC or node.op_type in CONTROL_FLOW or lookup(node.domain, node.op_type) is None:
        return False
    return all(not name or name in constants for name in node.inputs)


def _fold_constants(nodes: list[Node], constants: dict[str, torch.Tensor]) -> tuple[list[Node], int]:
    kept, folded = [], 0
    for node in nodes:
        if not _foldable(node, constants):
            kept.append(node)
            continue
        with torch.no_grad():
            values = evaluate_known(node, [constants[n] if n else None for n in node.inputs])
        for name, value in zip(node.outputs, values):
            if name and value is not None:
                constants[name] = value
        folded += 1
    return kept, folded


# -- Conv + BatchNormalization ----------------------------------------------------------------------


def _fold_batchnorms(
    nodes: list[Node], constants: dict[str, torch.Tensor], graph_outputs: set[str]
) -> tuple[list[Node], int]:
    consumers: dict[str, int] = {}
    for node in nodes:
        for name in node.inputs:
            if name:
                consumers[name] = consumers.get(name, 0) + 1
    producer = {out: i for i, node in enumerate(nodes) for out in node.outputs if out}
    replaced: dict[int, Node] = {}
    dropped: set[int] = set()
    for i, bn in enumerate(nodes):
        if bn.op_type != "BatchNormalization" or bn.domain or bn.attrs.get("training_mode", 0):
            continue
        if len([o for o in bn.outputs if o]) != 1 or not all(n in constants for n in bn.inputs[1:5]):
            continue
        source = bn.inputs[0]
        j = producer.get(source)
        if j is None or j in replaced or consumers.get(source) != 1 or source in graph_outputs:
            continue
        conv = nodes[j]
        if conv.op_type != "Conv" or conv.domain or conv.inputs[1] not in constants:
            continue
        if len(conv.inputs) > 2 and conv.inputs[2] and conv.inputs[2] not in constants:
            continue
        weight = constants[conv.inputs[1]]
        if weight.dtype != torch.float32:
            continue
        scale, bias, mean, var = (constants[n].double() for n in bn.inputs[1:5])
        factor = scale / torch.sqrt(var + bn.attrs.get("epsilon", 1e-5))
        if factor.numel() != weight.shape[0]:
            continue
        old_bias = constants[conv.inputs[2]].double() if len(conv.inputs) > 2 and conv.inputs[2] else torch.zeros_like(mean)
        w_name, b_name = f"{conv.inputs[1]}::bn_folded::{j}", f"{bn.outputs[0]}::bias::{j}"
        constants[w_name] = (weight.double() * factor.reshape(-1, *([1] * (weight.dim() - 1)))).float()
        constants[b_name] = ((old_bias - mean) * factor + bias).float()
        replaced[j] = attrs.evolve(conv, inputs=(conv.inputs[0], w_name, b_name), outputs=(bn.outputs[0],))
        dropped.add(i)
    out = [replaced.get(k, node) for k, node in enumerate(nodes) if k not in dropped]
    return out, len(dropped)


# -- coverage ---------------------------------------------------------------------------------------


def _node_gap(node: Any) -> str | None:
    """Why the registry cannot lower this ``onnx_ir`` node (None when it can)."""
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    if domain == "" and node.op_type in CONTROL_FLOW:
        return None
    op = lookup(domain, node.op_type)
    if op is None:
        return op_name(domain, node.op_type)
    if op.check is not None:
        probe = Node(
            op_type=node.op_type,
            domain=domain,
            name=node.name or "",
            inputs=(),
            outputs=(),
            attrs={k: (a.value if a.type != ir.AttributeType.GRAPH else None) for k, a in node.attributes.items()},
            opset=0,
        )
        return op.check(probe)
    return None


def unsupported_ops(graph: Graph) -> list[str]:
    """Operators (``domain::Op``, or ``Op(attribute=value)``) this backend cannot lower."""
    local = {(f.domain, f.name) for f in graph.model.functions.values()}
    gaps = set()
    for node in ir.traversal.RecursiveGraphIterator(graph.model.graph):
        if ((node.domain or ""), node.op_type) in local:
            continue
        gap = _node_gap(node)
        if gap:
            gaps.add(gap)
    return sorted(gaps)
