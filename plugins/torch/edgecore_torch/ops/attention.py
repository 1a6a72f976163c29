"""ONNX Attention (opset 23+), as ``onnx.reference`` computes it: 3-D (with ``q_num_heads`` /
``kv_num_heads``) or 4-D inputs, past key/value concatenated (``present_*`` outputs), boolean or
additive masks padded to the key length, causal masks aligned to the bottom right (after the past),
sliding windows, ``nonpad_kv_seqlen`` padding, grouped-query heads, ``softcap``,
``softmax_precision`` and every ``qk_matmul_output_mode``. Fully masked rows give zeros.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgecore_torch.ops._registry import OpContext, register, torch_dtype

_NEG_INF = float("-inf")


def _allowed_bias(q_len: int, kv_len: int, offset, left: int, right: int, causal: bool, device) -> torch.Tensor:
    """0 where a query may attend a key, -inf elsewhere; [q, kv], or [batch, 1, q, kv] for per-batch offsets."""
    i = torch.arange(q_len, device=device).reshape(q_len, 1)
    j = torch.arange(kv_len, device=device).reshape(1, kv_len)
    if isinstance(offset, torch.Tensor):
        i = i + offset.reshape(-1, 1, 1).to(torch.int64)
    else:
        i = i + int(offset)
    allowed = torch.ones_like(i - j, dtype=torch.bool)
    if causal:
        allowed &= j <= i
    if left >= 0:
        allowed &= (i - j) <= left
    if right >= 0:
        allowed &= (j - i) <= right
    bias = torch.where(allowed, 0.0, _NEG_INF)
    return bias.unsqueeze(1) if bias.dim() == 3 else bias


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, s, hidden = x.shape
    return x.reshape(b, s, heads, hidden // heads).transpose(1, 2)


def _as_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.where(mask, 0.0, _NEG_INF).to(dtype)
    return mask.to(dtype)


@register("Attention")
def _attention(ctx: OpContext):
    rank = ctx.rank(0)
    q_heads, kv_heads = ctx.attr("q_num_heads"), ctx.attr("kv_num_heads")
    causal = bool(ctx.attr("is_causal", 0))
    softcap = ctx.attr("softcap", 0.0) or 0.0
    mode = ctx.attr("qk_matmul_output_mode", 0)
    precision = ctx.attr("softmax_precision")
    softmax_dtype = ctx.run_dtype(torch_dtype(precision)) if precision else None
    left, right = ctx.attr("left_window_size", -1), ctx.attr("right_window_size", -1)
    head_size = ctx.shape(0)[-1] // q_heads if rank == 3 else ctx.shape(0)[3]
    scale = ctx.attr("scale")
    root = math.sqrt(scale if scale is not None else 1.0 / math.sqrt(head_size))
    def run(q, k, v, mask=None, past_key=None, past_value=None, nonpad=None):
        if rank == 3:
            q, k, v = _heads(q, q_heads), _heads(k, kv_heads), _heads(v, kv_heads)
        batch, heads, q_len = q.shape[0], q.shape[1], q.shape[2]
        present_key = torch.cat([past_key, k], dim=2) if past_key is not None else k
        present_value = torch.cat([past_value, v], dim=2) if past_value is not None else v
        kv_len = present_key.shape[2]
        bias = torch.zeros((q_len, kv_len), dtype=q.dtype, device=q.device)
        if mask is not None and mask.shape[-1] < kv_len:
            fill = False if mask.dtype == torch.bool else _NEG_INF
            mask = F.pad(mask, (0, kv_len - mask.shape[-1]), value=fill)
        if mask is not None:
            bias = bias + _as_bias(mask, q.dtype)
        if causal or left >= 0 or right >= 0:
            if past_key is None and nonpad is not None:
                offset = nonpad.reshape(-1).to(torch.int64) - q_len
            else:
                offset = past_key.shape[2] if past_key is not None else 0
            bias = bias + _allowed_bias(q_len, kv_len, offset, left, right, causal, q.device).to(q.dtype)
        if nonpad is not None:
            keep = torch.arange(kv_len, device=q.device).reshape(1, kv_len) < nonpad.reshape(-1, 1)
            bias = bias + torch.where(keep, 0.0, _NEG_INF).to(q.dtype).reshape(batch, 1, 1, kv_len)
        keys, values = present_key, present_value
        if keys.shape[1] != heads and heads % keys.shape[1] == 0:
            keys = keys.repeat_interleave(heads // keys.shape[1], dim=1)
            values = values.repeat_interleave(heads // values.shape[1], dim=1)
        scores = torch.matmul(q * root, (keys * root).transpose(-1, -2))
        if softcap > 0:
            scores = torch.tanh(scores / softcap) * softcap
        with_bias = scores + bias
        qk_out = with_bias if mode == 2 else scores
        weights = torch.softmax(with_bias.to(softmax_dtype) if softmax_dtype else with_bias, dim=-1)
        masked_rows = torch.isneginf(bias.amax(dim=-1, keepdim=True))
        weights = torch.where(masked_rows, torch.zeros((), dtype=weights.dtype, device=weights.device), weights)
        if mode == 3:
            qk_out = weights
        y = torch.matmul(weights.to(q.dtype), values)
        if rank == 3:
            y = y.transpose(1, 2).reshape(batch, q_len, -1)
        return y, present_key, present_value, qk_out.to(q.dtype)

    return run
