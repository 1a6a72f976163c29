"""Mixed precision: float16 everywhere it is safe, float32 where it is not.

:func:`convert_to_fp16` lowers every standard-domain node that computes in float32 to float16,
except op types in ``keep_ops`` and node names in ``keep_nodes``. Weights of lowered nodes are
stored in float16; ``Cast`` nodes join float16 and float32 regions; graph inputs and outputs keep
their float32 type, so callers see the same interface.

:class:`Fp16Pass` converts, measures the loss against the original on the samples and, when the
budget is broken, ranks nodes by the error they add in float16 and keeps the most sensitive ones in
float32 until the budget holds (:mod:`edgecore.optimize.sensitivity`); the report lists them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from edgecore.errors import OptimizationError
from edgecore.optimize.graph_passes import const_array, new_initializer, refresh_shapes
from edgecore.optimize.sensitivity import fallback_search, rank_nodes

if TYPE_CHECKING:
    from edgecore.optimize.manager import PassContext

logger = logging.getLogger(__name__)

__all__ = ["convert_to_fp16", "Fp16Pass", "lowerable_nodes"]

F32, F16 = ir.DataType.FLOAT, ir.DataType.FLOAT16

#: Ops that carry float data only through attributes or produce no float: never touched.
_SKIP = frozenset({"Shape", "Size", "NonZero", "ArgMax", "ArgMin"})

_OPTIONS = {"fallback", "keep_nodes", "max_tries"}


def _is_f32(value: ir.Value | None) -> bool:
    return value is not None and value.dtype == F32


def _has_subgraph(node: ir.Node) -> bool:
    return any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values())


def lowerable_nodes(model: ir.Model, keep_ops: Iterable[str]) -> list[str]:
    """Names of the nodes :func:`convert_to_fp16` would lower (float32 standard ops not kept)."""
    keep = frozenset(keep_ops)
    names = []
    for node in model.graph:
        if _lowerable(node, keep, frozenset()):
            names.append(node.name)
    return names


def _lowerable(node: ir.Node, keep_ops: frozenset[str], keep_nodes: frozenset[str]) -> bool:
    if node.domain not in ("", "ai.onnx") or node.op_type in keep_ops or node.op_type in _SKIP:
        return False
    if node.name in keep_nodes or _has_subgraph(node):
        return False
    if node.op_type == "Cast":
        return _is_f32(node.inputs[0]) if node.inputs else False
    if node.op_type in ("Constant", "ConstantOfShape"):
        return False
    return any(_is_f32(v) for v in node.inputs) or any(_is_f32(v) for v in node.outputs)


def convert_to_fp16(model: ir.Model, keep_ops: Iterable[str], keep_nodes: Iterable[str] = ()) -> int:
    """Lower ``model`` in place to float16 (see the module docstring); return the nodes lowered."""
    refresh_shapes(model)
    graph = model.graph
    keep_ops, keep_nodes = frozenset(keep_ops), frozenset(keep_nodes)
    low = [n for n in graph if n.name and _lowerable(n, keep_ops, keep_nodes)]
    low += [n for n in graph if not n.name and _lowerable(n, keep_ops, keep_nodes)]
    low_set = set(map(id, low))
    half_weights: dict[ir.Value, ir.Value] = {}
    to_half: dict[ir.Value, ir.Value] = {}
    to_float: dict[ir.Value, ir.Value] = {}
    lowered_outputs: set[int] = set()

    def cast(value: ir.Value, to: ir.DataType, where: ir.Node, cache: dict) -> ir.Value:
        if value in cache:
            return cache[value]
        suffix = "fp16" if to == F16 else "fp32"
        node = ir.Node("", "Cast", [value], attributes=[ir.AttrInt64("to", int(to))],
                       name=f"{value.name}_to_{suffix}", num_outputs=1)
        out = node.outputs[0]
        out.name, out.dtype, out.shape = f"{value.name}_{suffix}", to, value.shape
        producer = value.producer()
        if producer is not None:
            graph.insert_after(producer, node)
        else:
            graph.insert_before(where, node)
        cache[value] = out
        return out

    # 1. every float32 output of a lowered node becomes float16
    for node in low:
        if node.op_type == "Cast":
            target = node.attributes["to"].as_int()
            if target == int(F32):
                node.attributes["to"] = ir.AttrInt64("to", int(F16))
        for value in node.outputs:
            if _is_f32(value):
                value.dtype = F16
                lowered_outputs.add(id(value))
    # 2. inputs of lowered nodes: float16 weights, casts from float32 producers and graph inputs
    for node in low:
        for index, value in enumerate(node.inputs):
            if value is None or id(value) in lowered_outputs or value.dtype != F32:
                continue
            array = const_array(value)
            if array is not None and (value.is_initializer() or value.producer() is not None):
                if value not in half_weights:
                    half = np.clip(array, -65504, 65504).astype(np.float16)
                    half_weights[value] = new_initializer(graph, f"{value.name}_fp16", half)
                node.replace_input_with(index, half_weights[value])
            else:
                node.replace_input_with(index, cast(value, F16, node, to_half))
    # 3. float32 consumers and graph outputs of lowered values get them cast back
    for node in low:
        for value in node.outputs:
            if id(value) not in lowered_outputs:
                continue
            for user, index in list(value.uses()):
                if id(user) not in low_set:
                    user.replace_input_with(index, cast(value, F32, user, to_float))
            if value.is_graph_output():
                name = value.name
                position = [i for i, o in enumerate(graph.outputs) if o is value]
                value.name = f"{name}_fp16"
                back = cast(value, F32, node, to_float)
                back.name = name
                for i in position:
                    graph.outputs[i] = back
    common_passes.RemoveUnusedNodesPass()(model)
    common_passes.TopologicalSortPass()(model)
    return len(low)


class Fp16Pass(ir.passes.FunctionalPass):
    """float16 conversion with ``keep_ops`` in float32 and sensitivity-guided fallback.

    Options (``custom_options["fp16"]``): ``fallback`` (default True: keep the most sensitive nodes
    in float32 when the whole conversion breaks the budget), ``keep_nodes`` (node names to keep in
    float32), ``max_tries`` (measurements the fallback search may spend, default 10).
    """

    def __init__(self, context: PassContext | None = None, *, keep_ops: Iterable[str] = (),
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        options = dict(options or {})
        unknown = set(options) - _OPTIONS
        if unknown:
            raise OptimizationError(f"pass 'fp16' does not know option(s) {sorted(unknown)}; known: {sorted(_OPTIONS)}")
        self.context = context
        self.keep_ops = frozenset(keep_ops)
        keep_nodes = options.get("keep_nodes", ())
        if isinstance(keep_nodes, str):  # from the command line: "a,b"
            keep_nodes = [n for n in keep_nodes.split(",") if n]
        self.keep_nodes = frozenset(keep_nodes)
        self.fallback = bool(options.get("fallback", True))
        self.max_tries = int(options.get("max_tries", 10))

    def _converted(self, model: ir.Model, keep: frozenset[str] = frozenset()) -> tuple[ir.Model, int]:
        work = ir.from_proto(ir.to_proto(model))
        return work, convert_to_fp16(work, self.keep_ops, self.keep_nodes | keep)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        context = self.context
        work, lowered = self._converted(model)
        if lowered == 0 or context is None:
            return ir.passes.PassResult(work, modified=lowered > 0)
        context.detail("nodes_lowered", lowered)
        context.detail("keep_fp32_ops", sorted(self.keep_ops))
        loss = context.measure(work)
        if context.within_budget(loss) or not self.fallback:
            context.detail("kept_fp32_nodes", sorted(self.keep_nodes))
            return ir.passes.PassResult(work, modified=True)
        candidates = [c for c in lowerable_nodes(model, self.keep_ops) if c not in self.keep_nodes]
        ranked = rank_nodes(context, model, work, candidates)
        context.note(f"full fp16 conversion lost {loss:.4g}; searching for the nodes to keep in float32")
        result = fallback_search(context, ranked, lambda keep: self._converted(model, keep)[0],
                                 max_tries=self.max_tries)
        context.detail("fallback_tries", [list(t) for t in result.tries])
        if result.model is None:
            context.note("no fallback within the tries met the budget")
            return ir.passes.PassResult(work, modified=True)  # the manager rolls it back, with the loss
        context.detail("kept_fp32_nodes", sorted(self.keep_nodes | set(result.kept_float)))
        context.note(f"kept in float32 for accuracy: {', '.join(result.kept_float)}")
        return ir.passes.PassResult(result.model, modified=True)
