"""Newer and rarer operators: Swish, RMSNormalization, CumProd, MeanVarianceNormalization, Det,
ReverseSequence, LpPool, GlobalLpPool."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgecore_torch.ops._registry import OpContext, register
from edgecore_torch.ops.nn import _pads, _torch_pad
from edgecore_torch.ops.tensor import cumulative, norm_axis


@register("Swish")
def _swish(ctx: OpContext):
    alpha = ctx.attr("alpha", 1.0)
    return lambda x: x * torch.sigmoid(alpha * x)


@register("RMSNormalization")
def _rms_norm(ctx: OpContext):
    rank = ctx.rank(0)
    axis = norm_axis(ctx.attr("axis", -1), rank)
    eps = ctx.attr("epsilon", 1e-5)
    dims = tuple(range(axis, rank))

    def run(x, scale):
        x32 = x.float()
        y = x32 * torch.rsqrt((x32 * x32).mean(dim=dims, keepdim=True) + eps)
        return (y * scale.float()).to(x.dtype)

    return run


@register("CumProd")
def _cumprod(ctx: OpContext):
    return cumulative(ctx, torch.cumprod, torch.ones_like)


@register("MeanVarianceNormalization")
def _mvn(ctx: OpContext):
    rank = ctx.rank(0)
    axes = tuple(norm_axis(a, rank) for a in (ctx.attr("axes") or [0, 2, 3]))

    def run(x):
        mean = x.mean(dim=axes, keepdim=True)
        centered = x - mean
        return centered / torch.sqrt((centered * centered).mean(dim=axes, keepdim=True) + 1e-9)

    return run


@register("Det")
def _det(ctx: OpContext):
    return lambda x: torch.linalg.det(x.float()).to(x.dtype) if x.dtype in (torch.float16, torch.bfloat16) else torch.linalg.det(x)


@register("ReverseSequence")
def _reverse_sequence(ctx: OpContext):
    batch_axis, time_axis = ctx.attr("batch_axis", 1), ctx.attr("time_axis", 0)
    dims = ctx.shape(0)
    steps = dims[time_axis]
    view = [1] * len(dims)
    view[time_axis] = steps
    batch_view = [1] * len(dims)
    batch_view[batch_axis] = dims[batch_axis]
    device = ctx.device

    def run(x, lengths):
        t = torch.arange(steps, device=device).reshape(view)
        n = lengths.to(torch.int64).reshape(batch_view)
        index = torch.where(t < n, n - 1 - t, t).expand(x.shape)
        return torch.gather(x, time_axis, index)

    return run


def _lp_check(node) -> str | None:
    if any(d != 1 for d in node.attrs.get("dilations") or ()):
        return "LpPool with dilations"
    return None


@register("LpPool", check=_lp_check)
def _lp_pool(ctx: OpContext):
    kernel = list(ctx.attr("kernel_shape"))
    n = len(kernel)
    strides = list(ctx.attr("strides") or [1] * n)
    p = ctx.attr("p", 2)
    begin, end = _pads(ctx, kernel, strides, [1] * n)
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
    pre = _torch_pad(begin, end)
    size = math.prod(kernel)
    ceil_mode = bool(ctx.attr("ceil_mode", 0))

    def run(x):
        powered = F.pad(torch.abs(x) ** p, pre)
        return (pool(powered, kernel, strides, 0, ceil_mode, True) * size) ** (1.0 / p)

    return run


@register("GlobalLpPool")
def _global_lp_pool(ctx: OpContext):
    p = ctx.attr("p", 2)
    dims = tuple(range(2, ctx.rank(0)))
    return lambda x: torch.linalg.vector_norm(x, ord=p, dim=dims, keepdim=True)


_GRID_MODES = {"bilinear": "bilinear", "linear": "bilinear", "nearest": "nearest", "bicubic": "bicubic", "cubic": "bicubic"}


def _grid_check(node) -> str | None:
    mode = node.attrs.get("mode", "bilinear" if node.opset < 20 else "linear")
    if mode not in _GRID_MODES:
        return f"GridSample(mode={mode})"
    return None


@register("GridSample", check=_grid_check)
def _grid_sample(ctx: OpContext):
    mode = _GRID_MODES[ctx.attr("mode", "bilinear")]
    padding = ctx.attr("padding_mode", "zeros")
    align = bool(ctx.attr("align_corners", 0))
    if ctx.rank(0) not in (4, 5) or (mode == "bicubic" and ctx.rank(0) != 4):
        raise NotImplementedError(f"GridSample on rank {ctx.rank(0)} with mode {mode}")
    return lambda x, grid: F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode=padding, align_corners=align)


@register("Unique", data_dependent=True)
def _unique(ctx: OpContext):
    axis = ctx.attr("axis")
    if axis is not None:
        axis = norm_axis(axis, ctx.rank(0))
    ordered = bool(ctx.attr("sorted", 1))

    def run(x):
        flat = x if axis is not None else x.reshape(-1)
        dim = axis if axis is not None else 0
        values, inverse, counts = torch.unique(flat, sorted=True, return_inverse=True, return_counts=True, dim=dim)
        positions = torch.arange(flat.shape[dim], device=x.device)
        first = torch.full((counts.shape[0],), flat.shape[dim], dtype=torch.int64, device=x.device)
        first = first.scatter_reduce(0, inverse, positions, reduce="amin")
        if not ordered:  # the order of first occurrence
            order = torch.argsort(first)
            rank = torch.empty_like(order)
            rank[order] = torch.arange(order.shape[0], device=x.device)
            values, first, counts, inverse = values.index_select(dim, order), first[order], counts[order], rank[inverse]
        return values, first, inverse, counts

    return run
