"""Neural-network operators: convolutions, pooling, normalizations, matrix products, softmax.

Padding follows ONNX: explicit ``pads`` as ``[begin..., end...]``, or ``auto_pad`` SAME_UPPER /
SAME_LOWER / VALID. Symmetric padding goes to torch's own ``padding``; asymmetric padding is applied
first with ``F.pad`` (zeros for convolutions and average pools, -inf for max pools).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgecore_torch.ops._registry import OpContext, register
from edgecore_torch.ops.tensor import norm_axis

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _pads(ctx: OpContext, kernel, strides, dilations) -> tuple[list[int], list[int]]:
    """(begin, end) padding per spatial axis, from ``pads`` or ``auto_pad``."""
    n = len(kernel)
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = list(ctx.attr("pads") or [0] * (2 * n))
        return pads[:n], pads[n:]
    if auto_pad == "VALID":
        return [0] * n, [0] * n
    spatial = ctx.shape(0)[2:]
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else big)
        end.append(big if auto_pad == "SAME_UPPER" else small)
    return begin, end


def _torch_pad(begin: list[int], end: list[int]) -> list[int]:
    return [p for b, e in zip(reversed(begin), reversed(end)) for p in (b, e)]


def _check_spatial(node) -> str | None:
    kernel = node.attrs.get("kernel_shape")
    if kernel is not None and len(kernel) not in (1, 2, 3):
        return f"{node.op_type} with {len(kernel)} spatial dimensions"
    return None


@register("Conv", check=_check_spatial)
def _conv(ctx: OpContext):
    w_shape = ctx.shape(1)
    kernel = list(ctx.attr("kernel_shape") or w_shape[2:])
    n = len(kernel)
    strides = list(ctx.attr("strides") or [1] * n)
    dilations = list(ctx.attr("dilations") or [1] * n)
    groups = ctx.attr("group", 1)
    begin, end = _pads(ctx, kernel, strides, dilations)
    conv = _CONV[n]
    channels_last = n == 2 and "channels_last" in ctx.hints
    if begin == end:
        padding, pre = tuple(begin), None
    else:
        padding, pre = 0, _torch_pad(begin, end)

    def run(x, w, b=None):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if pre is not None:
            x = F.pad(x, pre)
        return conv(x, w, b, strides, padding, dilations, groups)

    return run


@register("ConvTranspose", check=_check_spatial)
def _conv_transpose(ctx: OpContext):
    x_shape, w_shape = ctx.shape(0), ctx.shape(1)
    kernel = list(ctx.attr("kernel_shape") or w_shape[2:])
    n = len(kernel)
    strides = list(ctx.attr("strides") or [1] * n)
    dilations = list(ctx.attr("dilations") or [1] * n)
    groups = ctx.attr("group", 1)
    out_pad = list(ctx.attr("output_padding") or [0] * n)
    spatial = x_shape[2:]
    full = [s * (i - 1) + (k - 1) * d + 1 for i, k, s, d in zip(spatial, kernel, strides, dilations)]
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    output_shape = ctx.attr("output_shape")
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = list(output_shape)[-n:] if output_shape is not None else [i * s for i, s in zip(spatial, strides)]
        total = [f + p - t for f, p, t in zip(full, out_pad, target)]
        if auto_pad == "SAME_UPPER":
            begin = [t // 2 for t in total]
        else:
            begin = [t - t // 2 for t in total]
        end = [t - b for t, b in zip(total, begin)]
    elif auto_pad == "VALID":
        begin, end = [0] * n, [0] * n
    else:
        pads = list(ctx.attr("pads") or [0] * (2 * n))
        begin, end = pads[:n], pads[n:]
    conv = _CONV_T[n]
    if begin == end and all(b >= 0 for b in begin) and all(p < max(s, d) for p, s, d in zip(out_pad, strides, dilations)):
        padding = tuple(begin)
        return lambda x, w, b=None: conv(x, w, b, strides, padding, tuple(out_pad), groups, dilations)
    # general case: the full result, then crop (or zero-extend) each axis to [begin, full + out_pad - end)
    crop = [(b, f + p - e) for b, e, f, p in zip(begin, end, full, out_pad)]

    def run(x, w, b=None):
        y = conv(x, w, None, strides, 0, 0, groups, dilations)
        pads = []
        for (lo, hi), f in zip(reversed(crop), reversed(full)):
            pads += [-lo, hi - f]
        y = F.pad(y, pads)
        if b is not None:
            y = y + b.reshape(1, -1, *([1] * n))
        return y

    return run


def _pool_geometry(ctx: OpContext):
    kernel = list(ctx.attr("kernel_shape"))
    n = len(kernel)
    strides = list(ctx.attr("strides") or [1] * n)
    dilations = list(ctx.attr("dilations") or [1] * n)
    begin, end = _pads(ctx, kernel, strides, dilations)
    return kernel, strides, dilations, begin, end


def _fits_torch(kernel, dilations, begin, end) -> bool:
    return begin == end and all(b <= ((k - 1) * d + 1) // 2 for b, k, d in zip(begin, kernel, dilations))


@register("MaxPool", check=_check_spatial)
def _max_pool(ctx: OpContext):
    kernel, strides, dilations, begin, end = _pool_geometry(ctx)
    n = len(kernel)
    ceil_mode = bool(ctx.attr("ceil_mode", 0))
    pool = _MAX_POOL[n]
    if _fits_torch(kernel, dilations, begin, end):
        padding, pre = tuple(begin), None
    else:
        padding, pre = 0, _torch_pad(begin, end)
    if not ctx.output_wanted(1):

        def run(x):
            if pre is not None:
                x = F.pad(x, pre, value=-math.inf)
            return pool(x, kernel, strides, padding, dilations, ceil_mode)

        return run
    dims = ctx.shape(0)
    spatial = list(dims[2:])
    padded = [s + (b + e if pre is not None else 0) for s, b, e in zip(spatial, begin, end)]
    offset = begin if pre is not None else [0] * n
    column_major = ctx.attr("storage_order", 0) == 1
    plane = math.prod(spatial)

    def run_with_indices(x):
        if pre is not None:
            x = F.pad(x, pre, value=-math.inf)
        y, idx = pool(x, kernel, strides, padding, dilations, ceil_mode, return_indices=True)
        coords = []
        for size, off in zip(reversed(padded), reversed(offset)):
            coords.append(idx % size - off)
            idx = idx // size
        coords.reverse()  # one tensor per spatial axis, in the input's (unpadded) coordinates
        order = list(range(n)) if not column_major else list(reversed(range(n)))
        flat = torch.zeros_like(coords[0])
        for axis in order:
            flat = flat * spatial[axis] + coords[axis]
        nc = torch.arange(y.shape[0] * y.shape[1], device=y.device).reshape(y.shape[0], y.shape[1], *([1] * n))
        return y, flat + nc * plane

    return run_with_indices


def _avg_check(node) -> str | None:
    if any(d != 1 for d in node.attrs.get("dilations") or ()):
        return "AveragePool with dilations"
    return _check_spatial(node)


@register("AveragePool", check=_avg_check)
def _average_pool(ctx: OpContext):
    kernel, strides, dilations, begin, end = _pool_geometry(ctx)
    pool = _AVG_POOL[len(kernel)]
    ceil_mode = bool(ctx.attr("ceil_mode", 0))
    include_pad = bool(ctx.attr("count_include_pad", 0))
    if _fits_torch(kernel, dilations, begin, end):
        padding = tuple(begin)
        return lambda x: pool(x, kernel, strides, padding, ceil_mode, include_pad)
    pre = _torch_pad(begin, end)

    def run(x):
        summed = pool(F.pad(x, pre), kernel, strides, 0, ceil_mode, True)
        if include_pad:
            return summed
        ones = F.pad(torch.ones_like(x[:1, :1]), pre)
        return summed / pool(ones, kernel, strides, 0, ceil_mode, True)

    return run


@register("GlobalAveragePool")
def _global_average_pool(ctx: OpContext):
    dims = tuple(range(2, ctx.rank(0)))
    return lambda x: x.mean(dim=dims, keepdim=True)


@register("GlobalMaxPool")
def _global_max_pool(ctx: OpContext):
    dims = tuple(range(2, ctx.rank(0)))
    return lambda x: x.amax(dim=dims, keepdim=True)


def _bn_check(node) -> str | None:
    return "BatchNormalization(training_mode=1)" if node.attrs.get("training_mode", 0) else None


@register("BatchNormalization", check=_bn_check)
def _batch_norm(ctx: OpContext):
    eps = ctx.attr("epsilon", 1e-5)
    return lambda x, s, b, m, v: F.batch_norm(x, m, v, s, b, False, 0.0, eps)


@register("InstanceNormalization")
def _instance_norm(ctx: OpContext):
    eps = ctx.attr("epsilon", 1e-5)
    return lambda x, s, b: F.instance_norm(x, weight=s, bias=b, eps=eps)


@register("LayerNormalization")
def _layer_norm(ctx: OpContext):
    dims = ctx.shape(0)
    axis = norm_axis(ctx.attr("axis", -1), len(dims))
    eps = ctx.attr("epsilon", 1e-5)
    normalized = tuple(dims[axis:])
    affine = ctx.shape(1) == normalized and (not ctx.present(2) or ctx.shape(2) == normalized)
    reduce_dims = tuple(range(axis, len(dims)))
    stats = ctx.output_wanted(1) or ctx.output_wanted(2)

    def run(x, s, b=None):
        if affine:
            y = F.layer_norm(x, normalized, s, b, eps)
        else:
            y = F.layer_norm(x, normalized, None, None, eps) * s
            if b is not None:
                y = y + b
        if not stats:
            return y
        x32 = x.float()
        mean = x32.mean(dim=reduce_dims, keepdim=True)
        inv = torch.rsqrt(((x32 - mean) ** 2).mean(dim=reduce_dims, keepdim=True) + eps)
        return y, mean, inv

    return run


@register("GroupNormalization")
def _group_norm(ctx: OpContext):
    groups = ctx.attr("num_groups")
    eps = ctx.attr("epsilon", 1e-5)
    channels = ctx.shape(0)[1]
    per_group = math.prod(ctx.shape(1)) == groups and groups != channels
    repeat = channels // groups

    def run(x, s, b):
        if per_group:
            s, b = s.repeat_interleave(repeat), b.repeat_interleave(repeat)
        return F.group_norm(x, groups, s, b, eps)

    return run


@register("LpNormalization")
def _lp_norm(ctx: OpContext):
    axis, p = ctx.attr("axis", -1), ctx.attr("p", 2)
    def run(x):
        norm = torch.linalg.vector_norm(x, ord=p, dim=axis, keepdim=True)
        return x / torch.where(norm == 0, torch.ones_like(norm), norm)  # a zero vector stays zero

    return run


@register("LRN")
def _lrn(ctx: OpContext):
    size = ctx.attr("size")
    alpha, beta, bias = ctx.attr("alpha", 1e-4), ctx.attr("beta", 0.75), ctx.attr("bias", 1.0)
    front, back = (size - 1) // 2, size - 1 - (size - 1) // 2

    def run(x):
        shape = x.shape
        sq = (x * x).reshape(shape[0], 1, shape[1], -1)
        summed = F.avg_pool2d(F.pad(sq, (0, 0, front, back)), (size, 1), stride=1) * size
        return x / (bias + alpha / size * summed.reshape(shape)) ** beta

    return run


@register("Gemm")
def _gemm(ctx: OpContext):
    trans_a, trans_b = ctx.attr("transA", 0), ctx.attr("transB", 0)
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)

    def run(a, b, c=None):
        if trans_a:
            a = a.t()
        if trans_b:
            b = b.t()
        if c is None:
            y = a @ b
            return y * alpha if alpha != 1.0 else y
        return torch.addmm(c, a, b, beta=beta, alpha=alpha)

    return run


@register("MatMul")
def _matmul(ctx: OpContext):
    return torch.matmul


def _softmax(fn):
    def build(ctx: OpContext):
        if ctx.opset >= 13:
            axis = ctx.attr("axis", -1)
            return lambda x: fn(x, axis)
        dims = ctx.shape(0)
        axis = norm_axis(ctx.attr("axis", 1), len(dims))
        rows = math.prod(dims[:axis])
        return lambda x: fn(x.reshape(rows, -1), 1).reshape(dims)

    return build


def _hardmax(x: torch.Tensor, axis: int) -> torch.Tensor:
    n = x.shape[axis]
    return F.one_hot(x.argmax(axis), n).movedim(-1, axis).to(x.dtype)


register("Softmax")(_softmax(torch.softmax))
register("LogSoftmax")(_softmax(torch.log_softmax))
register("Hardmax")(_softmax(_hardmax))
