"""Pruning: structured (whole channels go, the graph gets smaller) and unstructured (weights zeroed).

:class:`StructuredPruningPass` removes ``ratio`` of the output channels of every prunable channel
group (see :mod:`edgecore.optimize.channels`), choosing the channels with the smallest L1 weight
norm, and removes the matching input channels downstream, so that dense kernels do less work.
Groups tied through a residual ``Add`` (ResNet's and MobileNet's skip connections) are left whole
unless ``residual="prune"``, in which case all their producers lose the same channels. Kept channel
counts are rounded to ``channel_multiple`` (SIMD kernels block channels by 8 or 16).

:class:`UnstructuredPruningPass` zeroes ``ratio`` of the smallest-magnitude weights of every Conv,
Gemm and MatMul weight tensor: the model compresses better and sparse-aware runtimes can skip the
zeros; dense kernels run no faster.

Both are lossy: the pass manager holds them to the accuracy budget.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from edgecore.errors import OptimizationError
from edgecore.optimize.channels import ChannelGroup, analyze, apply_plan, compensation_inputs, producer_weights
from edgecore.optimize.graph_passes import const_array, new_initializer, refresh_shapes

if TYPE_CHECKING:
    from edgecore.optimize.manager import PassContext

logger = logging.getLogger(__name__)

__all__ = ["StructuredPruningPass", "UnstructuredPruningPass", "kept_count"]

_STRUCTURED_OPTIONS = {"residual", "channel_multiple", "min_channels", "compensate"}
_UNSTRUCTURED_OPTIONS = {"min_size"}


def _check_options(options: Mapping[str, Any], known: set[str], name: str) -> None:
    unknown = set(options) - known
    if unknown:
        raise OptimizationError(f"pass {name!r} does not know option(s) {sorted(unknown)}; known: {sorted(known)}")


def kept_count(size: int, ratio: float, multiple: int, minimum: int) -> int:
    """Channels to keep out of ``size`` when pruning ``ratio``, rounded to ``multiple`` when it fits."""
    keep = size - int(round(ratio * size))
    if multiple > 1 and size >= 4 * multiple:
        keep = max(multiple, int(round(keep / multiple)) * multiple)
    return int(min(size, max(minimum, keep, 1)))


class StructuredPruningPass(ir.passes.InPlacePass):
    """Remove ``ratio`` of the output channels of each prunable Conv/Gemm/MatMul channel group.

    Options: ``residual`` (``"skip"``: leave groups tied through residual adds whole, the default;
    ``"prune"``: prune them together), ``channel_multiple`` (round kept counts to this, default 8),
    ``min_channels`` (never keep fewer, default 4; groups this small are left alone), ``compensate``
    (default True, with samples: what a removed channel fed each consumer on average, measured on
    the samples, goes into that consumer's bias).
    """

    def __init__(self, ratio: float, *, options: Mapping[str, Any] | None = None,
                 context: PassContext | None = None) -> None:
        super().__init__()
        options = dict(options or {})
        _check_options(options, _STRUCTURED_OPTIONS, "structured_pruning")
        self.context = context
        if not 0.0 <= ratio < 1.0:
            raise OptimizationError(f"pruning ratio must lie in [0, 1), got {ratio}")
        self.ratio = ratio
        self.residual = options.get("residual", "skip")
        if self.residual not in ("skip", "prune"):
            raise OptimizationError(
                f"structured_pruning option residual must be 'skip' or 'prune', got {self.residual!r}"
            )
        self.multiple = int(options.get("channel_multiple", 8))
        self.min_channels = int(options.get("min_channels", 4))
        self.compensate = bool(options.get("compensate", True))
        self.summary: dict[str, Any] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        plan = analyze(graph)
        keep: dict[Any, np.ndarray] = {}
        skipped: dict[str, int] = {}
        channels_before = channels_after = 0
        for group in plan.groups:
            reason = self._skip_reason(group)
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            n_keep = kept_count(group.size, self.ratio, self.multiple, self.min_channels)
            if n_keep >= group.size:
                skipped["too small to prune at this ratio"] = skipped.get("too small to prune at this ratio", 0) + 1
                continue
            scores = _importance(group)
            keep[group.key] = np.sort(np.argsort(-scores, kind="stable")[:n_keep])
            channels_before += group.size
            channels_after += n_keep
        self.summary = {
            "groups": len(plan.groups),
            "groups_pruned": len(keep),
            "groups_left_whole": skipped,
            "channels_before": channels_before,
            "channels_after": channels_after,
        }
        if not keep:
            self._report()
            return ir.passes.PassResult(model, modified=False)
        means = self._means(model, compensation_inputs(plan, keep)) if self.compensate else None
        self.summary["bias_compensation"] = bool(means)
        self.summary["weights_removed"] = apply_plan(graph, plan, keep, means)
        self._report()
        common_passes.RemoveUnusedNodesPass()(model)
        refresh_shapes(model)
        return ir.passes.PassResult(model, modified=True)

    def _means(self, model: ir.Model, values: list[ir.Value]) -> dict[str, np.ndarray] | None:
        """Per-channel means (axis 1) of ``values`` on up to 16 samples, or None without samples."""
        if self.context is None or not values:
            return None
        from edgecore.optimize.sensitivity import intermediate_values

        def mean(array: np.ndarray) -> np.ndarray:
            axes = tuple(i for i in range(array.ndim) if i != 1)
            return array.astype(np.float64).mean(axis=axes)

        rows = min(self.context.samples.rows, 16)
        names = [v.name for v in values if v.name]
        return intermediate_values(self.context, model, names, rows, chunk_size=16, reduce=mean)

    def _report(self) -> None:
        if self.context is not None:
            for key, value in self.summary.items():
                self.context.detail(key, value)
            if self.summary.get("channels_before"):
                share = 1 - self.summary["channels_after"] / self.summary["channels_before"]
                self.context.note(
                    f"{self.summary['groups_pruned']} of {self.summary['groups']} channel groups pruned: "
                    f"{self.summary['channels_before']} -> {self.summary['channels_after']} channels "
                    f"({share:.1%} removed)"
                )

    def _skip_reason(self, group: ChannelGroup) -> str:
        if not group.producers:
            return "no producer"
        if group.frozen:
            return "channels fixed by a consumer (reshape, output, unknown op...)"
        if group.size <= self.min_channels:
            return f"{self.min_channels} channels or fewer"
        if self.residual == "skip" and group.residual:
            return "tied through a residual add"
        return ""


def _importance(group: ChannelGroup) -> np.ndarray:
    """Per-channel L1 norm of the producers' weights, each producer normalized by its mean."""
    total = np.zeros(group.size, np.float64)
    for _, w, axis in producer_weights(group):
        norms = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).sum(axis=1).astype(np.float64)
        mean = norms.mean()
        total += norms / mean if mean > 0 else norms
    return total


class UnstructuredPruningPass(ir.passes.InPlacePass):
    """Zero ``ratio`` of the smallest |w| of each Conv/Gemm/MatMul weight (per tensor).

    Option ``min_size``: tensors with fewer elements are left alone (default 256).
    """

    def __init__(self, ratio: float, *, options: Mapping[str, Any] | None = None,
                 context: PassContext | None = None) -> None:
        super().__init__()
        options = dict(options or {})
        _check_options(options, _UNSTRUCTURED_OPTIONS, "unstructured_pruning")
        self.context = context
        self.ratio = ratio
        self.min_size = int(options.get("min_size", 256))
        self.summary: dict[str, Any] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        zeroed = total = tensors = 0
        done: dict[ir.Value, ir.Value] = {}
        for node in list(graph):
            if node.domain != "" or node.op_type not in ("Conv", "Gemm", "MatMul", "ConvTranspose"):
                continue
            if len(node.inputs) < 2 or node.inputs[1] is None:
                continue
            value = node.inputs[1]
            if value in done:
                node.replace_input_with(1, done[value])
                continue
            w = const_array(value)
            if w is None or w.dtype.kind != "f" or w.ndim < 2 or w.size < self.min_size:
                continue
            k = int(math.floor(self.ratio * w.size))
            if k == 0:
                continue
            flat = np.abs(w).reshape(-1)
            threshold = np.partition(flat, k - 1)[k - 1]
            mask = np.abs(w) <= threshold
            if mask.sum() > k:  # ties at the threshold: zero exactly k
                order = np.argsort(flat, kind="stable")[:k]
                mask = np.zeros(w.size, bool)
                mask[order] = True
                mask = mask.reshape(w.shape)
            pruned = np.where(mask, np.zeros((), w.dtype), w)
            new = new_initializer(graph, f"{value.name}_sparse", pruned)
            done[value] = new
            node.replace_input_with(1, new)
            zeroed += int(mask.sum())
            total += w.size
            tensors += 1
        self.summary = {"tensors": tensors, "weights_zeroed": zeroed, "weights_seen": total,
                        "sparsity": round(zeroed / total, 4) if total else 0.0}
        if self.context is not None:
            for key, value in self.summary.items():
                self.context.detail(key, value)
            self.context.note(f"{zeroed} of {total} weights zeroed in {tensors} tensors: smaller when compressed, "
                              f"faster only on sparse-aware runtimes")
        if not tensors:
            return ir.passes.PassResult(model, modified=False)
        common_passes.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=True)
