"""BERT encoder, tensor for tensor as Hugging Face's ``BertModel`` (bert-base-uncased by default).

Inputs ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64, ``[batch, sequence]``, both
dimensions dynamic); outputs ``last_hidden_state`` ``[batch, sequence, hidden]`` and
``pooler_output`` ``[batch, hidden]`` (dense + tanh on the first token). Standard opset-17 operators
only: Gather, LayerNormalization, MatMul, Reshape/Transpose for the heads, Softmax, GELU in its erf
form. Weights follow Hugging Face's initializer (normal, std 0.02), LayerNorm scales near one.

bert-base-uncased has 109,482,240 parameters; linear weights are stored ``[in, out]`` for MatMul.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto

from edgecore.zoo._builder import GraphBuilder, Value

__all__ = ["build_bert"]

INIT_STD = 0.02
#: Added to the attention scores of masked positions (Hugging Face's classic extended mask value).
MASK_VALUE = -10000.0


def _dense(b: GraphBuilder, x: Value, n_in: int, n_out: int, *, name: str) -> Value:
    w = b.initializer(f"{name}.weight", b.normal((n_in, n_out), INIT_STD))
    bias = b.initializer(f"{name}.bias", b.normal((n_out,), INIT_STD))
    y = b.op("MatMul", [x.name, w], None, name=f"{name}.matmul")
    return b.op("Add", [y.name, bias], None, name=f"{name}.add")


def _layer_norm(b: GraphBuilder, x: Value, hidden: int, eps: float, *, name: str) -> Value:
    gamma = b.initializer(f"{name}.weight", b.normal((hidden,), INIT_STD, 1.0))
    beta = b.initializer(f"{name}.bias", b.normal((hidden,), INIT_STD))
    return b.op("LayerNormalization", [x.name, gamma, beta], None, name=name, axis=-1, epsilon=eps)


def _gelu(b: GraphBuilder, x: Value, *, name: str) -> Value:
    """GELU, erf form: ``0.5 * x * (1 + erf(x / sqrt(2)))``."""
    scaled = b.op("Mul", [x.name, b.const(1.0 / math.sqrt(2.0))], None, name=f"{name}.scale")
    erf = b.op("Erf", [scaled], None, name=f"{name}.erf")
    one_plus = b.op("Add", [erf.name, b.const(1.0)], None, name=f"{name}.add")
    half_x = b.op("Mul", [x.name, b.const(0.5)], None, name=f"{name}.half")
    return b.op("Mul", [half_x, one_plus], None, name=name)


def _attention(b: GraphBuilder, h: Value, mask: Value, hidden: int, heads: int, *, name: str) -> Value:
    head_dim = hidden // heads
    split = b.const([0, 0, heads, head_dim], np.int64)

    def project(part: str, perm: list[int]) -> Value:
        y = _dense(b, h, hidden, hidden, name=f"{name}.self.{part}")
        y = b.op("Reshape", [y.name, split], None, name=f"{name}.self.{part}.split")
        return b.op("Transpose", [y], None, name=f"{name}.self.{part}.heads", perm=perm)

    q = project("query", [0, 2, 1, 3])  # [B, heads, S, d]
    k = project("key", [0, 2, 3, 1])  # [B, heads, d, S]
    v = project("value", [0, 2, 1, 3])  # [B, heads, S, d]
    scores = b.op("MatMul", [q, k], None, name=f"{name}.self.scores")
    scores = b.op("Mul", [scores.name, b.const(1.0 / math.sqrt(head_dim))], None, name=f"{name}.self.scale")
    scores = b.op("Add", [scores, mask], None, name=f"{name}.self.mask")
    probs = b.op("Softmax", [scores], None, name=f"{name}.self.softmax", axis=-1)
    context = b.op("MatMul", [probs, v], None, name=f"{name}.self.context")
    context = b.op("Transpose", [context], None, name=f"{name}.self.merge", perm=[0, 2, 1, 3])
    context = b.op("Reshape", [context.name, b.const([0, 0, hidden], np.int64)], None, name=f"{name}.self.merged")
    return _dense(b, context, hidden, hidden, name=f"{name}.output.dense")


def build_bert(
    *,
    seed: int = 0,
    vocab_size: int = 30522,
    hidden: int = 768,
    layers: int = 12,
    heads: int = 12,
    intermediate: int = 3072,
    max_positions: int = 512,
    type_vocab_size: int = 2,
    layer_norm_eps: float = 1e-12,
) -> onnx.ModelProto:
    """A BERT encoder with pooler; the defaults are bert-base-uncased's configuration."""
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    b = GraphBuilder(seed=seed)
    shape = ["batch", "sequence"]
    input_ids = b.add_input("input_ids", TensorProto.INT64, shape)
    attention_mask = b.add_input("attention_mask", TensorProto.INT64, shape)
    token_type_ids = b.add_input("token_type_ids", TensorProto.INT64, shape)

    # embeddings: word + position + token type, then LayerNorm
    def table(name: str, rows: int) -> str:
        return b.initializer(f"embeddings.{name}.weight", b.normal((rows, hidden), INIT_STD))

    words = b.op("Gather", [table("word_embeddings", vocab_size), input_ids.name], None, name="embeddings.word")
    seq_len = b.op("Shape", [input_ids], None, name="embeddings.seq_len", start=1, end=2)
    seq_len = b.op("Squeeze", [seq_len.name, b.const([0], np.int64)], None, name="embeddings.seq_len_scalar")
    positions = b.op(
        "Range", [b.const(0, np.int64), seq_len.name, b.const(1, np.int64)], None, name="embeddings.position_ids"
    )
    pos = b.op(
        "Gather", [table("position_embeddings", max_positions), positions.name], None, name="embeddings.position"
    )
    types = b.op("Gather", [table("token_type_embeddings", type_vocab_size), token_type_ids.name], None,
                 name="embeddings.token_type")
    h = b.add(b.add(words, pos, name="embeddings.add_position"), types, name="embeddings.add_token_type")
    h = _layer_norm(b, h, hidden, layer_norm_eps, name="embeddings.LayerNorm")

    # extended attention mask: 0 where attended, MASK_VALUE where masked; [B, 1, 1, S]
    mask = b.op("Cast", [attention_mask], None, name="mask.float", to=TensorProto.FLOAT)
    mask = b.op("Sub", [b.const(1.0), mask.name], None, name="mask.invert")
    mask = b.op("Mul", [mask.name, b.const(MASK_VALUE)], None, name="mask.scale")
    mask = b.op("Unsqueeze", [mask.name, b.const([1, 2], np.int64)], None, name="mask.extended")

    for i in range(layers):
        name = f"encoder.layer.{i}"
        attn = _attention(b, h, mask, hidden, heads, name=f"{name}.attention")
        h = _layer_norm(b, b.add(attn, h, name=f"{name}.attention.residual"), hidden, layer_norm_eps,
                        name=f"{name}.attention.output.LayerNorm")
        ffn = _gelu(b, _dense(b, h, hidden, intermediate, name=f"{name}.intermediate.dense"),
                    name=f"{name}.intermediate.gelu")
        ffn = _dense(b, ffn, intermediate, hidden, name=f"{name}.output.dense")
        h = _layer_norm(b, b.add(ffn, h, name=f"{name}.output.residual"), hidden, layer_norm_eps,
                        name=f"{name}.output.LayerNorm")

    first = b.op("Gather", [h.name, b.const(0, np.int64)], None, name="pooler.first_token", axis=1)
    pooled = b.op("Tanh", [_dense(b, first, hidden, hidden, name="pooler.dense")], None, name="pooler.tanh")
    b.add_output(h, "last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden])
    b.add_output(pooled, "pooler_output", TensorProto.FLOAT, ["batch", hidden])
    return b.model("bert", doc=f"BERT {layers} layers, hidden {hidden}, {heads} heads, seed {seed}")
