"""Reductions, arg-reductions and TopK.

``axes`` is an attribute before opset 18 (before 13 for ReduceSum) and an optional input from then
on; no axes reduce everything unless ``noop_with_empty_axes``.
"""

from __future__ import annotations

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
    return lambda x, *_: tuple(torch.topk(x, k, dim=axis, largest=largest, sorted=True))
