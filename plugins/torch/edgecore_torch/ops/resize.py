"""Resize (and the older Upsample), separable along axes as ONNX defines them.

For each resized axis the source coordinates, neighbour indices and interpolation weights are
computed once per input signature (float64, on the host), exactly as ``onnx.reference`` computes
them; the run is then an ``index_select`` per tap and a weighted sum (``index_select`` alone for
``nearest``). Common cases go to ``F.interpolate`` instead: nearest with integer scales and
asymmetric/floor coordinates, and (bi)linear with half-pixel or align-corners coordinates.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from edgecore_torch.ops._registry import OpContext, register
from edgecore_torch.ops.tensor import norm_axis


def _check(node) -> str | None:
    if node.attrs.get("antialias", 0):
        return "Resize(antialias=1)"
    mode = node.attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic", "bilinear", "trilinear"):
        return f"{node.op_type}(mode={mode})"
    return None


def _source(mode: str, out: int, scale: float, n: int, roi: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray | None]:
    y = np.arange(out, dtype=np.float64)
    width = scale * n  # the reference's (float) output width
    outside = None
    if mode == "align_corners":
        x = np.zeros(out) if width == 1 else y * (n - 1) / (width - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_crop_and_resize":
        start, end = roi if roi is not None else (0.0, 1.0)
        x = np.full(out, (end - start) * (n - 1) / 2) if width == 1 else y * (end - start) * (n - 1) / (width - 1)
        x = x + start * (n - 1)
        outside = (x < 0) | (x > n - 1)
    elif mode == "pytorch_half_pixel":
        x = np.full(out, -0.5) if width == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        offset = n / 2 * (1 - out / width)
        x = offset + (y + 0.5) / scale - 0.5
    else:
        raise NotImplementedError(f"Resize coordinate_transformation_mode {mode!r}")
    return x, outside


def _coeffs(kind: str, ratio: np.ndarray, nearest_mode: str, a: float) -> np.ndarray:
    if kind == "nearest":
        integer = ratio == 1.0
        if nearest_mode == "round_prefer_floor":
            right = ratio > 0.5
        elif nearest_mode == "round_prefer_ceil":
            right = ratio >= 0.5
        elif nearest_mode == "floor":
            right = np.zeros_like(ratio, dtype=bool)
        elif nearest_mode == "ceil":
            right = np.ones_like(ratio, dtype=bool)
        else:
            raise NotImplementedError(f"Resize nearest_mode {nearest_mode!r}")
        right = right | integer
        return np.stack([~right, right], axis=1).astype(np.float64)
    if kind == "linear":
        return np.stack([1 - ratio, ratio], axis=1)
    r = ratio
    return np.stack(
        [
            ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
            ((a + 2) * r - (a + 3)) * r * r + 1,
            ((a + 2) * (1 - r) - (a + 3)) * (1 - r) * (1 - r) + 1,
            ((a * ((1 - r) + 1) - 5 * a) * ((1 - r) + 1) + 8 * a) * ((1 - r) + 1) - 4 * a,
        ],
        axis=1,
    )


def _axis_plan(kind, mode, nearest_mode, a, exclude_outside, n, out, scale, roi):
    """(indices [out, taps], weights [out, taps] or None, extrapolated mask or None) for one axis."""
    x, outside = _source(mode, out, scale, n, roi)
    x_int = np.floor(x)
    ratio = np.where(x == x_int, 1.0, x - x_int)
    coeffs = _coeffs(kind, ratio, nearest_mode, a)
    taps = coeffs.shape[1]
    pad = math.ceil(taps / 2)
    padded = x + pad
    base = np.floor(padded)
    frac = padded - base
    if taps % 2 == 0:
        offset = np.where(frac == 0, -(taps // 2), -(taps // 2) + 1)
    else:
        offset = np.where(frac <= 0.5, -((taps - 1) // 2), -((taps - 1) // 2) + 1)
    neighbours = (base + offset)[:, None].astype(np.int64) + np.arange(taps)[None, :] - pad
    if exclude_outside:
        coeffs = np.where((neighbours < 0) | (neighbours >= n), 0.0, coeffs)
        total = coeffs.sum(axis=1, keepdims=True)
        coeffs = coeffs / np.where(total == 0, 1.0, total)
    clamped = np.clip(neighbours, 0, n - 1)
    if kind == "nearest":
        return clamped[np.arange(out), coeffs.argmax(axis=1)][:, None], None, outside
    return clamped, coeffs, outside


def _geometry(ctx: OpContext, dims: tuple[int, ...]):
    """(scales, sizes, roi) per axis of the input, from the node's inputs and attributes."""
    rank = len(dims)
    axes = ctx.attr("axes")
    axes = list(range(rank)) if axes is None else [norm_axis(a, rank) for a in axes]
    roi = scales = sizes = None
    if ctx.node.op_type == "Upsample":
        scales = list(ctx.attr("scales")) if ctx.opset < 9 else [float(v) for v in ctx.value(1).reshape(-1).tolist()]
    elif ctx.opset < 11:
        scales = [float(v) for v in ctx.value(1).reshape(-1).tolist()]
    else:
        if ctx.present(1) and ctx.value(1).numel():
            roi = [float(v) for v in ctx.value(1).reshape(-1).tolist()]
        if ctx.present(2) and ctx.value(2).numel():
            scales = [float(v) for v in ctx.value(2).reshape(-1).tolist()]
        if ctx.present(3) and ctx.value(3).numel():
            sizes = ctx.ints(3)
    full_scales, full_sizes = [1.0] * rank, list(dims)
    full_roi = [0.0] * rank + [1.0] * rank
    if roi is not None:
        for i, axis in enumerate(axes):
            full_roi[axis], full_roi[rank + axis] = roi[i], roi[len(axes) + i]
    if sizes is not None:
        for i, axis in enumerate(axes):
            full_sizes[axis] = sizes[i]
        full_scales = [o / d for o, d in zip(full_sizes, dims)]
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            picked = [full_scales[a] for a in axes]
            scale = min(picked) if policy == "not_larger" else max(picked)
            full_scales = [scale if i in axes else 1.0 for i in range(rank)]
            full_sizes = [int(scale * dims[i] + 0.5) if i in axes else dims[i] for i in range(rank)]
    else:
        for i, axis in enumerate(axes):
            full_scales[axis] = scales[i]
        full_sizes = [int(s * d) for s, d in zip(full_scales, dims)]
    return full_scales, full_sizes, full_roi, sizes is not None


def _fast_path(kind, mode, nearest_mode, dims, scales, sizes, by_size):
    """``F.interpolate`` arguments when it computes exactly what ONNX asks, else None."""
    if len(dims) not in (3, 4, 5) or scales[:2] != [1.0, 1.0]:
        return None
    spatial_scales, spatial_sizes = scales[2:], sizes[2:]
    target = {"size": spatial_sizes} if by_size else {"scale_factor": spatial_scales, "recompute_scale_factor": False}
    if kind == "nearest" and mode == "asymmetric" and nearest_mode == "floor":
        if all(float(s).is_integer() for s in spatial_scales):
            return {"mode": "nearest", **target}
    if kind == "linear" and (mode == "half_pixel" or (mode == "pytorch_half_pixel" and min(spatial_sizes) > 1)):
        return {"mode": {3: "linear", 4: "bilinear", 5: "trilinear"}[len(dims)], "align_corners": False, **target}
    if kind == "linear" and mode == "align_corners" and by_size:
        return {"mode": {3: "linear", 4: "bilinear", 5: "trilinear"}[len(dims)], "align_corners": True, "size": spatial_sizes}
    return None


def _build(ctx: OpContext):
    dims = ctx.shape(0)
    rank = len(dims)
    kind = ctx.attr("mode", "nearest")
    kind = "linear" if kind in ("bilinear", "trilinear") else kind
    if ctx.node.op_type == "Upsample" or ctx.opset < 11:
        mode, nearest_mode = "asymmetric", "floor"
    else:
        mode = ctx.attr("coordinate_transformation_mode", "half_pixel")
        nearest_mode = ctx.attr("nearest_mode", "round_prefer_floor")
    scales, sizes, roi, by_size = _geometry(ctx, dims)
    fast = _fast_path(kind, mode, nearest_mode, dims, scales, sizes, by_size)
    if fast is not None:
        return lambda x, *_: F.interpolate(x, **fast)
    a = ctx.attr("cubic_coeff_a", -0.75)
    exclude = bool(ctx.attr("exclude_outside", 0))
    extrapolation = ctx.attr("extrapolation_value", 0.0)
    plans = []
    for axis in range(rank):
        if math.isclose(scales[axis], 1.0) and sizes[axis] == dims[axis] and (
            mode != "tf_crop_and_resize" or (roi[axis] == 0.0 and roi[rank + axis] == 1.0)
        ):
            continue
        idx, weights, outside = _axis_plan(
            kind, mode, nearest_mode, a, exclude, dims[axis], sizes[axis], scales[axis], (roi[axis], roi[rank + axis])
        )
        plans.append((axis, idx, weights, outside))
    dtype, device = ctx.dtype(0), ctx.device
    steps = []
    for axis, idx, weights, outside in plans:
        out, taps = idx.shape
        shape = [1] * (rank + 1)
        shape[axis], shape[axis + 1] = out, taps
        w = torch.tensor(weights, dtype=dtype if dtype.is_floating_point else torch.float64, device=device).reshape(shape) if weights is not None else None
        mask = None
        if outside is not None and outside.any():
            mask_shape = [1] * rank
            mask_shape[axis] = out
            mask = torch.tensor(outside, device=device).reshape(mask_shape)
        steps.append((axis, torch.tensor(idx.reshape(-1), device=device), out, taps, w, mask))

    def run(x, *_):
        for axis, idx, out, taps, w, mask in steps:
            picked = x.index_select(axis, idx)
            if w is not None:
                shape = list(x.shape)
                shape[axis : axis + 1] = [out, taps]
                picked = (picked.reshape(shape) * w).sum(dim=axis + 1)
                if not x.dtype.is_floating_point:
                    picked = picked.round().to(x.dtype)
            if mask is not None:
                picked = torch.where(mask, torch.full((), extrapolation, dtype=picked.dtype, device=picked.device), picked)
            x = picked
        return x

    return run


register("Resize", check=_check)(_build)
register("Upsample", check=_check)(_build)
