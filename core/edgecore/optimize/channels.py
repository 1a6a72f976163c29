"""Channel dependency analysis for structured pruning: which output channels can go, and what follows.

Every Conv (dense, ``group=1``), Gemm and MatMul with constant weights *produces* a channel space:
its output channels. The analysis follows each space through the graph:

- ops that keep channels where they are (activations, pooling, BatchNormalization, depthwise Conv,
  per-channel or scalar constants in Add/Mul/Sub/Div...) pass the space on, and their per-channel
  constants are pruned along with it;
- an elementwise op joining two spaces (a residual ``Add``, squeeze-excitation's ``Mul``) *ties*
  them: they form one group, pruned together (with the same channels) or not at all;
- ``Concat`` on the channel axis and ``Flatten`` of ``[N, C, H, W]`` make derived spaces whose
  channel indices map back to their parts;
- a consuming Conv/Gemm/MatMul drops the matching input channels of its weights;
- anything else that sees a space (Reshape, Transpose, Softmax or LayerNormalization over the
  channels, a graph output, an op this module does not know) *freezes* its group.

The result, :class:`ChannelPlan`, lists the groups with their producers and whether they are free
to prune. :func:`apply_plan` performs the surgery for the channels chosen to keep.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import attrs
import numpy as np
import onnx_ir as ir

from edgecore.optimize.graph_passes import const_array, new_initializer

logger = logging.getLogger(__name__)

__all__ = ["ChannelGroup", "ChannelPlan", "analyze", "apply_plan", "compensation_inputs"]

#: Elementwise unary ops: output channel c depends on input channel c only.
UNARY = frozenset({
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu", "Softplus",
    "Softsign", "Gelu", "Mish", "Swish", "Identity", "Dropout", "Clip", "Erf", "Abs", "Neg", "Sqrt", "Exp", "Log",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "ThresholdedRelu", "Cast",
})
#: Pooling ops that keep axis 1 of an NCHW tensor.
POOLING = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"})
#: Elementwise binary ops (with numpy broadcasting).
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "PRelu", "Sum", "Mean"})
#: Reductions that keep a channel axis they do not reduce (keepdims=1).
REDUCE = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2", "ReduceL1"})


class _Group:
    """Union-find node: a set of tied channel spaces of one size."""

    def __init__(self, size: int) -> None:
        self.parent: _Group = self
        self.size = size
        self.producers: list[ir.Node] = []
        self.frozen: list[str] = []
        self.residual = False  # tied through an Add-like op (a skip connection)

    def root(self) -> _Group:
        node = self
        while node.parent is not node:
            node.parent = node.parent.parent
            node = node.parent
        return node


@attrs.frozen
class _Leaf:
    group: _Group

    @property
    def size(self) -> int:
        return self.group.root().size

    def leaves(self) -> list[_Group]:
        return [self.group.root()]


@attrs.frozen
class _Concat:
    parts: tuple[Any, ...]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    def leaves(self) -> list[_Group]:
        return [g for p in self.parts for g in p.leaves()]


@attrs.frozen
class _Blocks:
    """``Flatten`` of ``[N, C, H, W]``: channel c becomes features ``c*block .. (c+1)*block``."""

    base: Any
    block: int

    @property
    def size(self) -> int:
        return self.base.size * self.block

    def leaves(self) -> list[_Group]:
        return self.base.leaves()


def kept_indices(space: Any, keep: dict[_Group, np.ndarray]) -> np.ndarray:
    """Indices of ``space`` that survive, given each group's kept channels (None: all)."""
    if isinstance(space, _Leaf):
        root = space.group.root()
        return keep.get(root, np.arange(root.size))
    if isinstance(space, _Concat):
        out, offset = [], 0
        for part in space.parts:
            out.append(kept_indices(part, keep) + offset)
            offset += part.size
        return np.concatenate(out) if out else np.zeros(0, np.int64)
    base = kept_indices(space.base, keep)
    return (base[:, None] * space.block + np.arange(space.block)[None, :]).reshape(-1)


@attrs.frozen(kw_only=True)
class ChannelGroup:
    """Channels tied together: pruned with the same indices, by every producer, or not at all."""

    key: _Group = attrs.field(eq=False, repr=False)
    size: int
    producers: tuple[ir.Node, ...] = attrs.field(eq=False, repr=False)
    frozen: tuple[str, ...] = ()

    @property
    def free(self) -> bool:
        return not self.frozen and bool(self.producers)

    @property
    def tied(self) -> bool:
        """Whether several producers feed it (a residual chain, or squeeze-excitation's scale)."""
        return len(self.producers) > 1

    @property
    def residual(self) -> bool:
        """Whether it is tied through an Add-like op (a skip connection)."""
        return self.key.root().residual


@attrs.frozen(kw_only=True)
class _Edit:
    """A per-channel constant to prune: input ``index`` of ``node`` along ``axis`` by ``space``."""

    node: ir.Node = attrs.field(eq=False)
    index: int
    axis: int
    space: Any = attrs.field(eq=False)


@attrs.frozen(kw_only=True)
class ChannelPlan:
    """What :func:`analyze` found: groups, and the edits that pruning a group implies."""

    groups: tuple[ChannelGroup, ...]
    edits: tuple[_Edit, ...] = attrs.field(repr=False)
    #: nodes whose attributes or shape input follow a space: depthwise Conv ``group``, Reshape widths
    attribute_edits: tuple[tuple[ir.Node, Any], ...] = attrs.field(repr=False)


# -- analysis -----------------------------------------------------------------------------------------------


def _weight(node: ir.Node, index: int) -> np.ndarray | None:
    return const_array(node.inputs[index]) if len(node.inputs) > index and node.inputs[index] is not None else None


def _attr_int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_int()


def _attr_float(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_float()


def _const_axis_size(c: np.ndarray, axis_from_end: int) -> int:
    """Size of ``c`` along an axis counted from the end (1 when ``c`` is too short to have it)."""
    if c.ndim < -axis_from_end:
        return 1
    return c.shape[c.ndim + axis_from_end]


def _reduce_axes(node: ir.Node) -> list[int] | None:
    attr = node.attributes.get("axes")
    if attr is not None:
        return list(attr.as_ints())
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = const_array(node.inputs[1])
        return None if axes is None else [int(a) for a in axes.reshape(-1)]
    return None


class _Analyzer:
    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.spaces: dict[ir.Value, tuple[Any, int, int]] = {}  # value -> (space, axis from end, rank)
        self.groups: list[_Group] = []
        self.edits: list[_Edit] = []
        self.attribute_edits: list[tuple[ir.Node, Any]] = []

    # space bookkeeping ------------------------------------------------------------------------------

    def freeze(self, space: Any, why: str) -> None:
        for group in space.leaves():
            group.frozen.append(why)

    def tie(self, a: Any, b: Any, why: str, *, residual: bool = False) -> bool:
        if isinstance(a, _Leaf) and isinstance(b, _Leaf):
            ra, rb = a.group.root(), b.group.root()
            if ra is rb:
                return True
            if ra.size != rb.size:
                self.freeze(a, why)
                self.freeze(b, why)
                return False
            rb.parent = ra
            ra.producers.extend(rb.producers)
            ra.frozen.extend(rb.frozen)
            ra.residual = ra.residual or rb.residual or residual
            return True
        self.freeze(a, why)
        self.freeze(b, why)
        return False

    def set(self, value: ir.Value, space: Any, axis: int, rank: int) -> None:
        self.spaces[value] = (space, axis, rank)

    # walk -------------------------------------------------------------------------------------------------

    def run(self) -> ChannelPlan:
        for node in self.graph:  # topological order: producers before consumers
            self.visit(node)
            for attr in node.attributes.values():
                if attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS):
                    self.freeze_captured(node)
                    break
        for value in self.graph.outputs:
            if value in self.spaces:
                self.freeze(self.spaces[value][0], f"{value.name} is a graph output")
        roots: dict[_Group, None] = {}
        for group in self.groups:
            roots.setdefault(group.root(), None)
        groups = tuple(
            ChannelGroup(key=g, size=g.size, producers=tuple(dict.fromkeys(g.producers)), frozen=tuple(g.frozen))
            for g in roots
        )
        return ChannelPlan(groups=groups, edits=tuple(self.edits), attribute_edits=tuple(self.attribute_edits))

    def freeze_captured(self, node: ir.Node) -> None:
        """Values a subgraph of ``node`` reads from the outer graph keep their channels."""
        for attr in node.attributes.values():
            subgraphs = [attr.as_graph()] if attr.type == ir.AttributeType.GRAPH else (
                list(attr.as_graphs()) if attr.type == ir.AttributeType.GRAPHS else [])
            for sub in subgraphs:
                for inner in ir.traversal.RecursiveGraphIterator(sub):
                    for value in inner.inputs:
                        if value is not None and value in self.spaces:
                            self.freeze(self.spaces[value][0], f"read inside a subgraph of {node.name!r}")

    def visit(self, node: ir.Node) -> None:
        inputs = [(i, v) for i, v in enumerate(node.inputs) if v is not None and v in self.spaces]
        handled = False
        if node.domain == "":
            handled = self.visit_known(node, inputs)
        if not handled:
            for _, value in inputs:
                self.freeze(self.spaces[value][0], f"{node.op_type} {node.name!r} consumes the channels")
        if node.domain == "" and node.op_type in ("Conv", "Gemm", "MatMul"):
            self.produce(node)

    def produce(self, node: ir.Node) -> None:
        """Make ``node``'s output a fresh channel space if its channels can be pruned."""
        out = node.outputs[0]
        if out in self.spaces:  # a depthwise conv passed its input space through
            return
        w = _weight(node, 1)
        if w is None or w.dtype.kind != "f":
            return
        if node.op_type == "Conv":
            if _attr_int(node, "group", 1) != 1 or w.ndim < 3:
                return
            size, axis, rank = w.shape[0], -(w.ndim - 1), w.ndim
        elif node.op_type == "Gemm":
            if w.ndim != 2:
                return
            size, axis, rank = (w.shape[0] if _attr_int(node, "transB", 0) else w.shape[1]), -1, 2
        else:
            if w.ndim != 2:
                return
            x = node.inputs[0]
            rank = len(x.shape) if x is not None and x.shape is not None else 2
            size, axis = w.shape[1], -1
        if len(node.inputs) > 2 and node.inputs[2] is not None and _weight(node, 2) is None:
            return  # a bias computed at run time cannot be pruned here
        group = _Group(size)
        group.producers.append(node)
        self.groups.append(group)
        self.set(out, _Leaf(group), axis, rank)

    def visit_known(self, node: ir.Node, inputs: list[tuple[int, ir.Value]]) -> bool:
        op = node.op_type
        if not inputs:
            return True
        if op in ("Conv", "Gemm", "MatMul"):
            return self.consume(node, inputs)
        first, second = inputs[0][1], None
        space, axis, rank = self.spaces[first]
        if op in UNARY or op in POOLING:
            if op in POOLING and axis != -(rank - 1):
                return False
            if any(i != 0 for i, _ in inputs):  # e.g. a space fed to Clip's min
                return False
            self.set(node.outputs[0], space, axis, rank)
            return True
        if op in ("BatchNormalization", "InstanceNormalization"):
            if [i for i, _ in inputs] != [0] or axis != -(rank - 1):
                return False
            for index in range(1, len(node.inputs)):
                c = _weight(node, index)
                if c is None or c.ndim != 1 or c.shape[0] != space.size:
                    return False
                self.edits.append(_Edit(node=node, index=index, axis=0, space=space))
            self.set(node.outputs[0], space, axis, rank)
            return True
        if op in REDUCE:
            axes = _reduce_axes(node)
            if axes is None or _attr_int(node, "keepdims", 1) != 1 or inputs[0][0] != 0:
                return False
            if any((a if a < 0 else a - rank) == axis for a in axes):
                return False
            self.set(node.outputs[0], space, axis, rank)
            return True
        if op in BINARY:
            return self.binary(node, inputs)
        if op == "Concat":
            return self.concat(node, inputs)
        if op == "Flatten":
            return _attr_int(node, "axis", 1) == 1 and self.flatten(node, first, space, axis, rank)
        if op == "Reshape" and [i for i, _ in inputs] == [0]:
            return self.reshape(node, first, space, axis, rank)
        return False

    def per_channel_const(self, node: ir.Node, index: int, space: Any, axis: int, *, required: bool = False) -> bool:
        """Record input ``index`` of ``node`` (a constant) for pruning along ``axis`` if per channel."""
        value = node.inputs[index] if index < len(node.inputs) else None
        if value is None:
            return not required
        c = const_array(value)
        if c is None:
            return False
        size = _const_axis_size(c, axis)
        if size == 1 and not required:
            return True
        if size != space.size:
            return False
        self.edits.append(_Edit(node=node, index=index, axis=c.ndim + axis, space=space))
        return True

    def binary(self, node: ir.Node, inputs: list[tuple[int, ir.Value]]) -> bool:
        (i0, v0), *rest = inputs
        space, axis, rank = self.spaces[v0]
        for i, value in rest:
            other, other_axis, other_rank = self.spaces[value]
            if other_axis != axis:
                return False
            residual = node.op_type in ("Add", "Sub", "Sum", "Mean", "Max", "Min")
            why = f"{node.op_type} {node.name!r} joins spaces of different kinds"
            if not self.tie(space, other, why, residual=residual):
                self.set(node.outputs[0], space, axis, max(rank, other_rank))
                return True
            rank = max(rank, other_rank)
        spaced = {i for i, _ in inputs}
        for index, value in enumerate(node.inputs):
            if index in spaced or value is None:
                continue
            if not self.per_channel_const(node, index, space, axis):
                return False
        self.set(node.outputs[0], space, axis, rank)
        return True

    def concat(self, node: ir.Node, inputs: list[tuple[int, ir.Value]]) -> bool:
        first_space, axis, rank = self.spaces[inputs[0][1]]
        concat_axis = _attr_int(node, "axis", 0)
        if concat_axis >= 0:
            concat_axis -= rank
        if concat_axis != axis or len(inputs) != len(node.inputs):
            return False  # concatenating along another axis, or with tensors we do not follow
        if any(self.spaces[v][1] != axis for _, v in inputs):
            return False
        self.set(node.outputs[0], _Concat(tuple(self.spaces[v][0] for _, v in inputs)), axis, rank)
        return True

    def reshape(self, node: ir.Node, value: ir.Value, space: Any, axis: int, rank: int) -> bool:
        """A Reshape to ``[batch, -1]`` (or the same with the product written out) is a Flatten."""
        target = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if target is None or target.ndim != 1 or len(target) != 2 or value.shape is None:
            return False
        dims = list(value.shape)
        first_kept = target[0] == 0 and not _attr_int(node, "allowzero", 0) or (
            isinstance(dims[0], int) and target[0] == dims[0])
        rest = dims[1:]
        width = int(np.prod(rest)) if all(isinstance(d, int) for d in rest) else None
        if not first_kept or not (target[1] == -1 or (width is not None and target[1] == width)):
            return False
        if not self.flatten(node, value, space, axis, rank):
            return False
        if target[1] != -1:  # the width written out changes with the channels: make it -1
            self.attribute_edits.append((node, space))
        return True

    def flatten(self, node: ir.Node, value: ir.Value, space: Any, axis: int, rank: int) -> bool:
        if axis != -(rank - 1) or value.shape is None:
            return False
        spatial = list(value.shape)[2:]
        if not all(isinstance(d, int) for d in spatial):
            return False
        block = int(np.prod(spatial)) if spatial else 1
        self.set(node.outputs[0], _Blocks(space, block) if block > 1 else space, -1, 2)
        return True

    def consume(self, node: ir.Node, inputs: list[tuple[int, ir.Value]]) -> bool:
        """Conv/Gemm/MatMul taking a space as data input: prune its weights' input channels."""
        if [i for i, _ in inputs] != [0]:
            return False
        space, axis, rank = self.spaces[inputs[0][1]]
        w = _weight(node, 1)
        if w is None:
            return False
        op = node.op_type
        if op == "Conv":
            if axis != -(rank - 1):
                return False
            groups = _attr_int(node, "group", 1)
            if groups == 1:
                if w.shape[1] != space.size:
                    return False
                self.edits.append(_Edit(node=node, index=1, axis=1, space=space))
                return True
            if groups == space.size == w.shape[0] and w.shape[1] == 1:  # depthwise: passes the space on
                self.edits.append(_Edit(node=node, index=1, axis=0, space=space))
                if len(node.inputs) > 2 and node.inputs[2] is not None:
                    if const_array(node.inputs[2]) is None:
                        return False
                    self.edits.append(_Edit(node=node, index=2, axis=0, space=space))
                self.attribute_edits.append((node, space))
                self.set(node.outputs[0], space, axis, rank)
                return True
            return False
        if axis != -1:
            return False
        if op == "Gemm":
            if _attr_int(node, "transA", 0) or w.ndim != 2:
                return False
            w_axis = 1 if _attr_int(node, "transB", 0) else 0
        else:
            if w.ndim != 2:
                return False
            w_axis = 0
        if w.shape[w_axis] != space.size:
            return False
        self.edits.append(_Edit(node=node, index=1, axis=w_axis, space=space))
        return True


def analyze(graph: ir.Graph) -> ChannelPlan:
    """Find the channel groups of ``graph`` and what pruning each implies."""
    return _Analyzer(graph).run()


# -- surgery ------------------------------------------------------------------------------------------------


def _output_axis(node: ir.Node) -> int:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if _attr_int(node, "transB", 0) else 1
    return 1  # MatMul


def _pruned(space: Any, keep: dict[_Group, np.ndarray]) -> bool:
    return any(g in keep for g in space.leaves())


def _dense_consumer(edit: _Edit) -> bool:
    """An edit that drops input channels of a Conv (dense) or Gemm weight."""
    node = edit.node
    if edit.index != 1:
        return False
    if node.op_type == "Conv":
        return _attr_int(node, "group", 1) == 1 and edit.axis == 1
    return node.op_type == "Gemm"


def compensation_inputs(plan: ChannelPlan, keep: dict[Any, np.ndarray]) -> list[ir.Value]:
    """Data inputs of the Conv/Gemm consumers that lose input channels under ``keep``.

    Their per-channel means (over samples and positions) let :func:`apply_plan` move what the
    removed channels contributed on average into the consumers' biases.
    """
    keep = {key.root(): idx for key, idx in keep.items()}
    found: dict[ir.Value, None] = {}
    for edit in plan.edits:
        if _dense_consumer(edit) and _pruned(edit.space, keep) and edit.node.inputs[0] is not None:
            found.setdefault(edit.node.inputs[0], None)
    return list(found)


def _compensate(graph: ir.Graph, plan: ChannelPlan, keep: dict[_Group, np.ndarray],
                means: dict[str, np.ndarray]) -> int:
    """Add ``W[:, removed] . mean[removed]`` to each dense consumer's bias; return consumers changed."""
    changed = 0
    for edit in plan.edits:
        node, x = edit.node, edit.node.inputs[0]
        if not _dense_consumer(edit) or not _pruned(edit.space, keep) or x is None or x.name not in means:
            continue
        mean = means[x.name].astype(np.float64)
        w = const_array(node.inputs[1])
        if w is None or mean.shape != (edit.space.size,):
            continue
        removed = np.setdiff1d(np.arange(edit.space.size), kept_indices(edit.space, keep))
        if node.op_type == "Conv":
            taps = w[:, removed].astype(np.float64).reshape(w.shape[0], len(removed), -1).sum(axis=2)
            delta = taps @ mean[removed]  # the kernel's taps all see the mean (borders aside)
        else:
            alpha, beta = _attr_float(node, "alpha", 1.0), _attr_float(node, "beta", 1.0)
            if beta == 0:
                continue
            rows = w[:, removed].T if _attr_int(node, "transB", 0) else w[removed]
            delta = alpha * (mean[removed] @ rows.astype(np.float64)) / beta
        bias = _weight(node, 2)
        if bias is None and len(node.inputs) > 2 and node.inputs[2] is not None:
            continue  # a bias computed at run time
        if bias is None:
            bias = np.zeros(delta.shape, w.dtype)
            node.resize_inputs(3)
        elif bias.shape[-1:] != delta.shape:
            continue
        name = node.inputs[2].name if node.inputs[2] is not None else f"{node.inputs[1].name}_bias"
        node.replace_input_with(2, new_initializer(graph, f"{name}_compensated", (bias + delta).astype(w.dtype)))
        changed += 1
    return changed


def apply_plan(graph: ir.Graph, plan: ChannelPlan, keep: dict[Any, np.ndarray],
               means: dict[str, np.ndarray] | None = None) -> int:
    """Prune: ``keep`` maps a group's key to the sorted channel indices it keeps. Returns params removed.

    ``means`` (value name -> per-channel mean, for the values :func:`compensation_inputs` names)
    turns on bias compensation: what a removed channel fed a consumer on average goes into the
    consumer's bias. Every edited constant becomes a new initializer (shared weights elsewhere stay
    whole); unused originals are left for dead-code removal.
    """
    keep = {key.root(): np.asarray(idx, np.int64) for key, idx in keep.items()}
    if means:
        _compensate(graph, plan, keep, means)
    # (node, input index) -> list of (axis, indices); applied together so a weight pruned on both
    # axes (a conv between two pruned spaces) is edited once.
    cuts: dict[tuple[ir.Node, int], list[tuple[int, np.ndarray]]] = {}
    for group in plan.groups:
        root = group.key.root()
        if root not in keep:
            continue
        for producer in group.producers:
            cuts.setdefault((producer, 1), []).append((_output_axis(producer), keep[root]))
            bias = _weight(producer, 2)
            if bias is not None and bias.ndim >= 1 and bias.shape[-1] == root.size:
                cuts.setdefault((producer, 2), []).append((bias.ndim - 1, keep[root]))
    for edit in plan.edits:
        if not any(g in keep for g in edit.space.leaves()):
            continue
        cuts.setdefault((edit.node, edit.index), []).append((edit.axis, kept_indices(edit.space, keep)))
    removed = 0
    for (node, index), axes in cuts.items():
        value = node.inputs[index]
        array = const_array(value)
        before = array.size
        for axis, idx in axes:
            array = np.take(array, idx, axis=axis)
        removed += before - array.size
        node.replace_input_with(index, new_initializer(graph, f"{value.name}_pruned", np.ascontiguousarray(array)))
    for node, space in plan.attribute_edits:
        if not any(g in keep for g in space.leaves()):
            continue
        if node.op_type == "Conv":  # depthwise: one group per channel
            node.attributes["group"] = ir.AttrInt64("group", int(len(kept_indices(space, keep))))
        else:  # Reshape to [batch, width]: the width follows the channels
            target = const_array(node.inputs[1]).copy()
            target[1] = -1
            node.replace_input_with(1, new_initializer(graph, f"{node.inputs[1].name}_pruned", target))
    return removed


def producer_weights(group: ChannelGroup) -> Iterable[tuple[ir.Node, np.ndarray, int]]:
    """Each producer of ``group`` with its weight and output-channel axis."""
    for node in group.producers:
        w = const_array(node.inputs[1])
        if w is not None:
            yield node, w, _output_axis(node)
