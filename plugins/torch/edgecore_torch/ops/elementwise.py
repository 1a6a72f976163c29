"""Element-wise operators: arithmetic, comparisons, logic, activations, casts.

Broadcasting is numpy's (ONNX's multidirectional broadcasting), which torch follows.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from edgecore_torch.ops._registry import OpContext, register

_INTEGER = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.uint16, torch.uint32, torch.uint64)


def _is_int(dtype: torch.dtype) -> bool:
    return dtype in _INTEGER


def _simple(op_type: str, fn) -> None:
    register(op_type)(lambda ctx: fn)


# -- unary ------------------------------------------------------------------------------------------

for _name, _fn in {
    "Abs": torch.abs,
    "Neg": torch.neg,
    "Exp": torch.exp,
    "Log": torch.log,
    "Sqrt": torch.sqrt,
    "Reciprocal": torch.reciprocal,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Round": torch.round,  # half to even, as ONNX
    "Sign": torch.sign,
    "Sin": torch.sin,
    "Cos": torch.cos,
    "Tan": torch.tan,
    "Asin": torch.asin,
    "Acos": torch.acos,
    "Atan": torch.atan,
    "Sinh": torch.sinh,
    "Cosh": torch.cosh,
    "Asinh": torch.asinh,
    "Acosh": torch.acosh,
    "Atanh": torch.atanh,
    "Tanh": torch.tanh,
    "Sigmoid": torch.sigmoid,
    "Erf": torch.erf,
    "Relu": torch.relu,
    "Not": torch.logical_not,
    "IsNaN": torch.isnan,
    "Softsign": F.softsign,
    "Mish": F.mish,
    "BitwiseNot": torch.bitwise_not,
    "Identity": lambda x: x,
}.items():
    _simple(_name, _fn)


@register("Softplus")
def _softplus(ctx: OpContext):
    return F.softplus


@register("IsInf")
def _isinf(ctx: OpContext):
    neg, pos = ctx.attr("detect_negative", 1), ctx.attr("detect_positive", 1)
    if neg and pos:
        return torch.isinf
    if pos:
        return torch.isposinf
    if neg:
        return torch.isneginf
    return lambda x: torch.zeros_like(x, dtype=torch.bool)


@register("LeakyRelu")
def _leaky_relu(ctx: OpContext):
    alpha = ctx.attr("alpha", 0.01)
    return lambda x: F.leaky_relu(x, alpha)


@register("Elu")
def _elu(ctx: OpContext):
    alpha = ctx.attr("alpha", 1.0)
    return lambda x: F.elu(x, alpha)


@register("Celu")
def _celu(ctx: OpContext):
    alpha = ctx.attr("alpha", 1.0)
    return lambda x: F.celu(x, alpha)


@register("Selu")
def _selu(ctx: OpContext):
    alpha = ctx.attr("alpha", 1.67326319217681884765625)
    gamma = ctx.attr("gamma", 1.05070102214813232421875)
    return lambda x: gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


@register("HardSigmoid")
def _hard_sigmoid(ctx: OpContext):
    alpha, beta = ctx.attr("alpha", 0.2), ctx.attr("beta", 0.5)
    return lambda x: torch.clamp(x * alpha + beta, 0.0, 1.0)


@register("HardSwish")
def _hard_swish(ctx: OpContext):
    return F.hardswish


@register("ThresholdedRelu")
def _thresholded_relu(ctx: OpContext):
    alpha = ctx.attr("alpha", 1.0)
    return lambda x: torch.where(x > alpha, x, torch.zeros((), dtype=x.dtype, device=x.device))


@register("Shrink")
def _shrink(ctx: OpContext):
    bias, lambd = ctx.attr("bias", 0.0), ctx.attr("lambd", 0.5)

    def run(x):
        return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x))).to(x.dtype)

    return run


@register("Gelu")
def _gelu(ctx: OpContext):
    approximate = ctx.attr("approximate", "none")
    return lambda x: F.gelu(x, approximate=approximate)


@register("PRelu")
def _prelu(ctx: OpContext):
    return lambda x, slope: torch.where(x < 0, x * slope, x)


# -- binary and variadic ----------------------------------------------------------------------------

_simple("Add", torch.add)
_simple("Sub", torch.sub)
_simple("Mul", torch.mul)
_simple("Equal", torch.eq)
_simple("Greater", torch.gt)
_simple("Less", torch.lt)
_simple("GreaterOrEqual", torch.ge)
_simple("LessOrEqual", torch.le)
_simple("And", torch.logical_and)
_simple("Or", torch.logical_or)
_simple("Xor", torch.logical_xor)
_simple("BitwiseAnd", torch.bitwise_and)
_simple("BitwiseOr", torch.bitwise_or)
_simple("BitwiseXor", torch.bitwise_xor)


@register("Div")
def _div(ctx: OpContext):
    if _is_int(ctx.dtype(0)):
        return lambda a, b: torch.div(a, b, rounding_mode="trunc")
    return torch.div


@register("Mod")
def _mod(ctx: OpContext):
    if ctx.attr("fmod", 0):
        return torch.fmod
    return torch.remainder  # the sign of the divisor, as Python's %


@register("Pow")
def _pow(ctx: OpContext):
    dtype = ctx.dtype(0)
    return lambda a, b: torch.pow(a, b).to(dtype)


@register("BitShift")
def _bit_shift(ctx: OpContext):
    if ctx.attr("direction") == "LEFT":
        return torch.bitwise_left_shift
    return torch.bitwise_right_shift


def _variadic(fn):
    return lambda *xs: functools.reduce(fn, xs)


register("Sum")(lambda ctx: _variadic(torch.add))
register("Max")(lambda ctx: _variadic(torch.maximum))
register("Min")(lambda ctx: _variadic(torch.minimum))


@register("Mean")
def _mean(ctx: OpContext):
    n = ctx.num_inputs
    return lambda *xs: functools.reduce(torch.add, xs) / n


@register("Where")
def _where(ctx: OpContext):
    return torch.where


@register("Clip")
def _clip(ctx: OpContext):
    if ctx.opset < 11:
        low, high = ctx.attr("min", -math.inf), ctx.attr("max", math.inf)
    else:
        low = ctx.scalar(1) if ctx.is_known(1) else None
        high = ctx.scalar(2) if ctx.is_known(2) else None
        if (ctx.present(1) and low is None) or (ctx.present(2) and high is None):
            return lambda x, lo=None, hi=None: torch.clamp(x, lo, hi)  # bounds computed from the data
    if low is None and high is None:
        return lambda x, *_: x
    return lambda x, *_: torch.clamp(x, low, high)


# -- types ------------------------------------------------------------------------------------------


def _cast_check(node) -> str | None:
    to = node.attrs.get("to")
    from edgecore_torch.ops._registry import ONNX_TO_TORCH

    if to not in ONNX_TO_TORCH:
        return f"Cast to ONNX type {to}"
    return None


@register("Cast", check=_cast_check)
def _cast(ctx: OpContext):
    dtype = ctx.onnx_dtype(ctx.attr("to"))
    return lambda x: x.to(dtype)


@register("CastLike")
def _cast_like(ctx: OpContext):
    return lambda x, like: x.to(like.dtype)
