"""QuantizeLinear / DequantizeLinear (per-tensor and per-axis; QDQ graphs run as simulated int8)."""

from __future__ import annotations

import torch

from edgecore_torch.ops._registry import OpContext, register
from edgecore_torch.ops.tensor import norm_axis


def _check(node) -> str | None:
    if node.attrs.get("block_size", 0):
        return f"{node.op_type}(block_size={node.attrs['block_size']})"
    return None


def _broadcast(ctx: OpContext, index: int) -> list[int] | None:
    """The view that puts a per-axis scale/zero point on ``axis``; None for per-tensor."""
    if not ctx.present(index):
        return None
    shape = ctx.shape(index)
    if len(shape) == 0 or shape == (1,):
        return None
    rank = ctx.rank(0)
    view = [1] * rank
    view[norm_axis(ctx.attr("axis", 1), rank)] = -1
    return view


@register("DequantizeLinear", check=_check)
def _dequantize(ctx: OpContext):
    view = _broadcast(ctx, 1)

    def run(x, scale, zero_point=None):
        if view is not None:
            scale = scale.reshape(view)
            zero_point = zero_point.reshape(view) if zero_point is not None else None
        y = x.to(scale.dtype)
        if zero_point is not None:
            y = y - zero_point.to(scale.dtype)
        return y * scale

    return run


@register("QuantizeLinear", check=_check)
def _quantize(ctx: OpContext):
    view = _broadcast(ctx, 1)
    if ctx.present(2):  # the zero point's own type (a known one as stored: not widened)
        dtype = ctx.known[2].dtype if ctx.is_known(2) else ctx.dtype(2)
    else:
        from edgecore_torch.ops._registry import torch_dtype

        dtype = torch_dtype(ctx.attr("output_dtype", 2) or 2)
    info = torch.iinfo(dtype)
    run_dtype = ctx.run_dtype(dtype)

    def run(x, scale, zero_point=None):
        if view is not None:
            scale = scale.reshape(view)
            zero_point = zero_point.reshape(view) if zero_point is not None else None
        y = torch.round(x / scale)
        if zero_point is not None:
            y = y + zero_point.to(y.dtype)
        return torch.clamp(y, info.min, info.max).to(run_dtype)

    return run
