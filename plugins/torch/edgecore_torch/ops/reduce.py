"""Reductions, arg-reductions and TopK.

``axes`` is an attribute before opset 18 (before 13 for ReduceSum) and an optional input from then
on; no axes reduce everything unless ``noop_with_empty_axes``.
"""

from __future__ import annotations

import math

import torch

from edgecore_torch.ops._registry import OpContext, register
from edgecore_torch.ops.tensor import norm_axis


def _prod(x: torch.Tensor, axes: tuple[int, ...], keepdim: bool) -> torch.Tensor:
    for axis in sorted(axes, reverse=True):
        x = torch.prod(x, dim=axis, keepdim=keepdim)
    return x


def _sum(x, axes, keepdim):
    return torch.sum(x, dim=axes, keepdim=keepdim)


_REDUCTIONS = {
    "ReduceSum": (_sum, 13),
    "ReduceMean": (lambda x, a, k: torch.mean(x, dim=a, keepdim=k), 18),
    "ReduceMax": (lambda x, a, k: torch.amax(x, dim=a, keepdim=k), 18),
    "ReduceMin": (lambda x, a, k: torch.amin(x, dim=a, keepdim=k), 18),
    "ReduceProd": (_prod, 18),
    "ReduceL1": (lambda x, a, k: _sum(torch.abs(x), a, k), 18),
    "ReduceL2": (lambda x, a, k: torch.sqrt(_sum(x * x, a, k)), 18),
    "ReduceLogSum": (lambda x, a, k: torch.log(_sum(x, a, k)), 18),
    "ReduceLogSumExp": (lambda x, a, k: torch.logsumexp(x, dim=a, keepdim=k), 18),
    "ReduceSumSquare": (lambda x, a, k: _sum(x * x, a, k), 18),
}


#: what a reduction over no elements gives (ONNX: the operation's identity)
_EMPTY = {
    "ReduceSum": 0.0, "ReduceL1": 0.0, "ReduceL2": 0.0, "ReduceSumSquare": 0.0, "ReduceProd": 1.0,
    "ReduceMax": -math.inf, "ReduceMin": math.inf, "ReduceLogSum": -math.inf, "ReduceLogSumExp": -math.inf,
    "ReduceMean": math.nan,
}


def _empty(op_type: str, dtype: torch.dtype) -> float | int:
    value = _EMPTY[op_type]
    if dtype.is_floating_point or not math.isinf(value):
        return value
    if dtype == torch.bool:
        return value > 0
    info = torch.iinfo(dtype)
    return info.max if value > 0 else info.min


def _reduction(fn, since: int):
    def build(ctx: OpContext):
        rank = ctx.rank(0)
        axes = ctx.attr("axes") if ctx.opset < since else ctx.optional_ints(1)
        keepdims = bool(ctx.attr("keepdims", 1))
        if not axes:
            if ctx.attr("noop_with_empty_axes", 0):
                return lambda x, *_: x
            axes = range(rank)
        axes = tuple(sorted({norm_axis(a, rank) for a in axes}))
        if not axes:  # a scalar
            return lambda x, *_: fn(x, (), keepdims) if x.dim() else x
        dims = ctx.shape(0)
        if any(dims[a] == 0 for a in axes):
            shape = [1 if a in axes else d for a, d in enumerate(dims)] if keepdims else [d for a, d in enumerate(dims) if a not in axes]
            fill, dtype, device = _empty(ctx.node.op_type, ctx.dtype(0)), ctx.dtype(0), ctx.device
            return lambda x, *_: torch.full(shape, fill, dtype=dtype, device=device)
        return lambda x, *_: fn(x, axes, keepdims)

    return build


for _name, (_fn, _since) in _REDUCTIONS.items():
    register(_name)(_reduction(_fn, _since))


def _arg(fn):
    def build(ctx: OpContext):
        rank = ctx.rank(0)
        axis = norm_axis(ctx.attr("axis", 0), rank)
        keepdims = bool(ctx.attr("keepdims", 1))
        if not ctx.attr("select_last_index", 0):
            return lambda x: fn(x, dim=axis, keepdim=keepdims)
        n = ctx.shape(0)[axis]
        return lambda x: (n - 1) - fn(x.flip(axis), dim=axis, keepdim=keepdims)

    return build


register("ArgMax")(_arg(torch.argmax))
register("ArgMin")(_arg(torch.argmin))


@register("TopK")
def _topk(ctx: OpContext):
    k = ctx.attr("k") if ctx.opset < 10 else ctx.int(1)
    axis = norm_axis(ctx.attr("axis", -1), ctx.rank(0))
    largest = bool(ctx.attr("largest", 1))

    def run(x, *_):  # a stable sort: equal values keep the lower index first, as ONNX asks
        values, indices = torch.sort(x, dim=axis, descending=largest, stable=True)
        return values.narrow(axis, 0, k), indices.narrow(axis, 0, k)

    return run
