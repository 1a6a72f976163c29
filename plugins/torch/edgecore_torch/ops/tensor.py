"""Operators that move, select, reshape or create tensors (ONNX semantics: negative axes and
indices, clamped slices, opset differences between attributes and inputs)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgecore_torch.ops._registry import OpContext, register

I64 = torch.int64


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _axes_from(ctx: OpContext, since: int, index: int = 1) -> list[int] | None:
    """Axes given as an attribute before opset ``since`` and as input ``index`` from it on."""
    if ctx.opset < since:
        axes = ctx.attr("axes")
        return list(axes) if axes is not None else None
    return ctx.optional_ints(index)


def fit_fill(value: float, dtype: torch.dtype) -> float:
    """A fill value representable in ``dtype`` (float32 extremes become fp16's, not infinities)."""
    if dtype.is_floating_point and math.isfinite(value):
        info = torch.finfo(dtype)
        return min(max(value, info.min), info.max)
    return value


def _constant_check(node) -> str | None:
    if not any(k in node.attrs for k in _CONSTANT_ATTRS):
        return f"Constant with attribute(s) {sorted(node.attrs)}"
    return None


_CONSTANT_ATTRS = ("value", "value_float", "value_floats", "value_int", "value_ints")


@register("Constant", check=_constant_check)
def _constant(ctx: OpContext):
    name = next(k for k in _CONSTANT_ATTRS if ctx.attr(k) is not None)
    value = ctx.attr(name)
    if isinstance(value, torch.Tensor):
        tensor = value
    elif name.startswith("value_float"):
        tensor = torch.tensor(value, dtype=torch.float32)
    else:
        tensor = torch.tensor(value, dtype=I64)
    return lambda: tensor


@register("Shape")
def _shape(ctx: OpContext):
    dims = ctx.shape(0)
    rank = len(dims)
    start = ctx.attr("start", 0)
    end = ctx.attr("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    values, device = list(dims[start:end]), ctx.device
    return lambda *_: torch.tensor(values, dtype=I64, device=device)


@register("Size")
def _size(ctx: OpContext):
    n, device = math.prod(ctx.shape(0)), ctx.device
    return lambda *_: torch.tensor(n, dtype=I64, device=device)


@register("Reshape")
def _reshape(ctx: OpContext):
    target = ctx.ints(1)
    if not ctx.attr("allowzero", 0) and 0 in target:
        dims = ctx.shape(0)
        target = [dims[i] if d == 0 else d for i, d in enumerate(target)]
    return lambda x, *_: x.reshape(target)


@register("Flatten")
def _flatten(ctx: OpContext):
    dims = ctx.shape(0)
    axis = norm_axis(ctx.attr("axis", 1), len(dims))
    target = (math.prod(dims[:axis]), math.prod(dims[axis:]))
    return lambda x: x.reshape(target)


@register("Transpose")
def _transpose(ctx: OpContext):
    perm = ctx.attr("perm")
    if perm is None:
        perm = list(reversed(range(ctx.rank(0))))
    perm = list(perm)
    return lambda x: x.permute(perm)


@register("Squeeze")
def _squeeze(ctx: OpContext):
    axes = _axes_from(ctx, 13)
    if axes is None:
        axes = [i for i, d in enumerate(ctx.shape(0)) if d == 1]
    rank = ctx.rank(0)
    axes = tuple(norm_axis(a, rank) for a in axes)
    return lambda x, *_: torch.squeeze(x, dim=axes) if axes else x


@register("Unsqueeze")
def _unsqueeze(ctx: OpContext):
    axes = _axes_from(ctx, 13)
    out_rank = ctx.rank(0) + len(axes)
    axes = sorted(norm_axis(a, out_rank) for a in axes)

    def run(x, *_):
        for axis in axes:
            x = x.unsqueeze(axis)
        return x

    return run


@register("Concat")
def _concat(ctx: OpContext):
    axis = norm_axis(ctx.attr("axis"), ctx.rank(0))
    return lambda *xs: torch.cat(xs, dim=axis)


@register("Split")
def _split(ctx: OpContext):
    dims = ctx.shape(0)
    axis = norm_axis(ctx.attr("axis", 0), len(dims))
    sizes = ctx.attr("split") if ctx.opset < 13 else ctx.optional_ints(1)
    if not sizes:
        n = ctx.attr("num_outputs") or ctx.num_outputs
        size = dims[axis]
        if ctx.attr("num_outputs") is not None:
            chunk = -(-size // n)
            sizes = [chunk] * (n - 1) + [size - chunk * (n - 1)]
        else:
            sizes = [size // n] * n
    sizes = list(sizes)
    return lambda x, *_: torch.split(x, sizes, dim=axis)


@register("Slice")
def _slice(ctx: OpContext):
    if ctx.opset < 10:
        starts, ends = list(ctx.attr("starts")), list(ctx.attr("ends"))
        axes = ctx.attr("axes")
        steps = None
    else:
        starts, ends = ctx.ints(1), ctx.ints(2)
        axes = ctx.optional_ints(3)
        steps = ctx.optional_ints(4)
    dims = ctx.shape(0)
    rank = len(dims)
    axes = list(range(len(starts))) if axes is None else [norm_axis(a, rank) for a in axes]
    steps = steps or [1] * len(starts)
    index: list[slice] = [slice(None)] * rank
    reversed_axes: list[tuple[int, torch.Tensor]] = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        n = dims[axis]
        start = start + n if start < 0 else start
        end = end + n if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), n), min(max(end, 0), n)
            index[axis] = slice(start, max(start, end), step)
        else:
            start, end = min(max(start, 0), n - 1), min(max(end, -1), n - 1)
            picked = list(range(start, end, step)) if n else []
            reversed_axes.append((axis, torch.tensor(picked, dtype=I64, device=ctx.device)))
    index_t = tuple(index)

    def run(x, *_):
        y = x[index_t]
        for axis, picked in reversed_axes:
            y = y.index_select(axis, picked)
        return y

    return run


@register("Gather")
def _gather(ctx: OpContext):
    rank = ctx.rank(0)
    axis = norm_axis(ctx.attr("axis", 0), rank)
    lead = (slice(None),) * axis
    if ctx.is_known(1):
        indices = ctx.value(1)
        n = ctx.shape(0)[axis]
        if indices.dim() == 0:
            k = int(indices.item())
            k = k + n if k < 0 else k
            return lambda x, *_: x.select(axis, k)
        indices = torch.where(indices < 0, indices + n, indices).to(I64).to(ctx.device)
        return lambda x, *_: x[lead + (indices,)]
    return lambda x, i: x[lead + (i,)]  # torch indexing wraps negative indices, as ONNX asks


@register("GatherElements")
def _gather_elements(ctx: OpContext):
    axis = norm_axis(ctx.attr("axis", 0), ctx.rank(0))

    def run(x, i):
        n = x.shape[axis]
        return torch.gather(x, axis, torch.where(i < 0, i + n, i).to(I64))

    return run


@register("GatherND")
def _gather_nd(ctx: OpContext):
    b = ctx.attr("batch_dims", 0)
    dims = ctx.shape(0)
    k = ctx.shape(1)[-1]
    limits = torch.tensor(dims[b : b + k], dtype=I64, device=ctx.device)

    def run(x, idx):
        idx = torch.where(idx < 0, idx + limits, idx).to(I64)
        if b == 0:
            return x[tuple(idx[..., j] for j in range(k))]
        batch = math.prod(x.shape[:b])
        xb = x.reshape(batch, *x.shape[b:])
        ib = idx.reshape(batch, -1, k)
        rows = torch.arange(batch, device=x.device).unsqueeze(1)
        out = xb[(rows,) + tuple(ib[..., j] for j in range(k))]
        return out.reshape(*idx.shape[:-1], *x.shape[b + k :])

    return run


_SCATTER_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


@register("ScatterElements")
def _scatter_elements(ctx: OpContext):
    axis = norm_axis(ctx.attr("axis", 0), ctx.rank(0))
    reduction = ctx.attr("reduction", "none")

    def run(x, i, updates):
        i = torch.where(i < 0, i + x.shape[axis], i).to(I64)
        if reduction == "none":
            return torch.scatter(x, axis, i, updates)
        return torch.scatter_reduce(x, axis, i, updates, reduce=_SCATTER_REDUCE[reduction], include_self=True)

    return run


register("Scatter")(_scatter_elements)  # opset 9-10 name of ScatterElements


def _scatter_nd_check(node) -> str | None:
    reduction = node.attrs.get("reduction", "none")
    return None if reduction in ("none", "add") else f"ScatterND(reduction={reduction})"


@register("ScatterND", check=_scatter_nd_check)
def _scatter_nd(ctx: OpContext):
    accumulate = ctx.attr("reduction", "none") == "add"
    dims = ctx.shape(0)
    k = ctx.shape(1)[-1]
    limits = torch.tensor(dims[:k], dtype=I64, device=ctx.device)

    def run(x, idx, updates):
        idx = torch.where(idx < 0, idx + limits, idx).to(I64)
        return x.index_put(tuple(idx[..., j] for j in range(k)), updates, accumulate=accumulate)

    return run


@register("Expand")
def _expand(ctx: OpContext):
    target = tuple(torch.broadcast_shapes(ctx.shape(0), tuple(ctx.ints(1))))
    return lambda x, *_: x.expand(target)


@register("Tile")
def _tile(ctx: OpContext):
    repeats = ctx.ints(1)
    return lambda x, *_: x.repeat(repeats)


def _pad_check(node) -> str | None:
    mode = node.attrs.get("mode", "constant")
    return None if mode in ("constant", "reflect", "edge", "wrap") else f"Pad(mode={mode})"


@register("Pad", check=_pad_check)
def _pad(ctx: OpContext):
    rank = ctx.rank(0)
    mode = ctx.attr("mode", "constant")
    if ctx.opset < 11:
        pads, value, axes = list(ctx.attr("pads")), ctx.attr("value", 0.0), None
    else:
        pads = ctx.ints(1)
        value = ctx.scalar(2) if ctx.present(2) else 0
        axes = ctx.optional_ints(3)
    begin, end = [0] * rank, [0] * rank
    axes = list(range(rank)) if axes is None else [norm_axis(a, rank) for a in axes]
    for k, axis in enumerate(axes):
        begin[axis], end[axis] = pads[k], pads[len(axes) + k]
    if mode == "constant":
        torch_pads = [p for axis in reversed(range(rank)) for p in (begin[axis], end[axis])]
        fill = fit_fill(value, ctx.dtype(0)) if isinstance(value, float) else value
        return lambda x, *_: F.pad(x, torch_pads, value=fill)
    dims = ctx.shape(0)
    crop = tuple(slice(max(-b, 0), n - max(-e, 0)) for b, e, n in zip(begin, end, dims))
    gathers = []
    for axis in range(rank):
        b, e = max(begin[axis], 0), max(end[axis], 0)
        if not (b or e):
            continue
        n = crop[axis].stop - crop[axis].start
        picked = [_pad_index(i, n, mode) for i in range(-b, n + e)]
        gathers.append((axis, torch.tensor(picked, dtype=I64, device=ctx.device)))

    def run(x, *_):
        x = x[crop]
        for axis, picked in gathers:
            x = x.index_select(axis, picked)
        return x

    return run


def _pad_index(i: int, n: int, mode: str) -> int:
    if mode == "edge":
        return min(max(i, 0), n - 1)
    if mode == "wrap":
        return i % n
    if n == 1:  # reflect
        return 0
    period = 2 * (n - 1)
    j = i % period
    return j if j < n else period - j


@register("ConstantOfShape")
def _constant_of_shape(ctx: OpContext):
    shape = ctx.ints(0)
    value = ctx.attr("value")
    if value is None:
        value = torch.zeros(1, dtype=torch.float32)
    dtype = ctx.run_dtype(value.dtype)
    fill = fit_fill(value.reshape(-1)[0].item(), dtype) if dtype.is_floating_point else value.reshape(-1)[0].item()
    device = ctx.device
    return lambda *_: torch.full(shape, fill, dtype=dtype, device=device)


@register("Range")
def _range(ctx: OpContext):
    start, limit, delta = ctx.scalar(0), ctx.scalar(1), ctx.scalar(2)
    dtype = ctx.dtype(0)
    if isinstance(start, int) and isinstance(limit, int) and isinstance(delta, int):
        n = max(-((start - limit) // delta), 0)
    else:
        n = max(math.ceil((limit - start) / delta), 0)
    device = ctx.device
    return lambda *_: (torch.arange(n, dtype=torch.float64 if dtype.is_floating_point else I64, device=device) * delta + start).to(dtype)


@register("EyeLike")
def _eye_like(ctx: OpContext):
    rows, cols = ctx.shape(0)
    k = ctx.attr("k", 0)
    dtype = ctx.onnx_dtype(ctx.attr("dtype")) if ctx.attr("dtype") is not None else ctx.dtype(0)
    device = ctx.device

    def run(x):
        mask = torch.arange(cols, device=device).unsqueeze(0) - torch.arange(rows, device=device).unsqueeze(1) == k
        return mask.to(dtype)

    return run


@register("OneHot")
def _one_hot(ctx: OpContext):
    depth = int(ctx.scalar(1))
    out_rank = ctx.rank(0) + 1
    axis = norm_axis(ctx.attr("axis", -1), out_rank)
    view = [1] * out_rank
    view[axis] = depth
    classes = torch.arange(depth, device=ctx.device).reshape(view)

    def run(indices, _depth, values):
        idx = indices.to(I64)
        idx = torch.where(idx < 0, idx + depth, idx).unsqueeze(axis)
        return torch.where(idx == classes, values[1], values[0])

    return run


@register("NonZero", data_dependent=True)
def _nonzero(ctx: OpContext):
    return lambda x: torch.nonzero(x).T.contiguous()


@register("Compress", data_dependent=True)
def _compress(ctx: OpContext):
    axis = ctx.attr("axis")
    if axis is not None:
        axis = norm_axis(axis, ctx.rank(0))

    def run(x, condition):
        picked = torch.nonzero(condition.reshape(-1)).reshape(-1)
        if axis is None:
            return x.reshape(-1).index_select(0, picked)
        return x.index_select(axis, picked)

    return run


@register("Dropout")
def _dropout(ctx: OpContext):
    if ctx.output_wanted(1):
        return lambda x, *_: (x, torch.ones_like(x, dtype=torch.bool))
    return lambda x, *_: x


@register("Trilu")
def _trilu(ctx: OpContext):
    k = ctx.int(1) if ctx.present(1) else 0
    fn = torch.triu if ctx.attr("upper", 1) else torch.tril
    return lambda x, *_: fn(x, k)


def cumulative(ctx: OpContext, scan, identity_like):
    """CumSum / CumProd: ``scan`` along the axis input, ``exclusive`` shifting in ``identity_like``
    (zeros / ones), ``reverse`` scanning from the end."""
    axis = norm_axis(ctx.int(1), ctx.rank(0))
    exclusive, reverse = ctx.attr("exclusive", 0), ctx.attr("reverse", 0)

    def run(x, *_):
        y = x.flip(axis) if reverse else x
        y = scan(y, dim=axis).to(x.dtype)
        if exclusive:
            y = torch.cat([identity_like(y.narrow(axis, 0, 1)), y.narrow(axis, 0, y.shape[axis] - 1)], dim=axis)
        return y.flip(axis) if reverse else y

    return run


@register("CumSum")
def _cumsum(ctx: OpContext):
    return cumulative(ctx, torch.cumsum, torch.zeros_like)


@register("Einsum")
def _einsum(ctx: OpContext):
    equation = ctx.attr("equation")
    return lambda *xs: torch.einsum(equation, *xs)


@register("DepthToSpace")
def _depth_to_space(ctx: OpContext):
    b, c, h, w = ctx.shape(0)
    bs = ctx.attr("blocksize")
    out_c = c // (bs * bs)
    if ctx.attr("mode", "DCR") == "DCR":
        split, perm = (b, bs, bs, out_c, h, w), (0, 3, 4, 1, 5, 2)
    else:
        split, perm = (b, out_c, bs, bs, h, w), (0, 1, 4, 2, 5, 3)
    final = (b, out_c, h * bs, w * bs)
    return lambda x: x.reshape(split).permute(perm).reshape(final)


@register("SpaceToDepth")
def _space_to_depth(ctx: OpContext):
    b, c, h, w = ctx.shape(0)
    bs = ctx.attr("blocksize")
    split, final = (b, c, h // bs, bs, w // bs, bs), (b, c * bs * bs, h // bs, w // bs)
    perm = (0, 1, 3, 5, 2, 4) if ctx.attr("mode", "DCR") == "CRD" else (0, 3, 5, 1, 2, 4)  # CRD: opset 28
    return lambda x: x.reshape(split).permute(perm).reshape(final)

