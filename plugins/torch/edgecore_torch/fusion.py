"""Operator fusions on the lowered node list: fewer, larger kernels for the patterns exporters write.

* ``MatMul(x, W) + B`` with constant 2-D ``W`` and 1-D ``B`` -> ``F.linear`` (one cuBLASLt call with
  the bias in its epilogue on CUDA, instead of a product and an add);
* ``0.5 * x * (1 + erf(x / sqrt(2)))`` in the orders the zoo and torch's exporter write it ->
  ``F.gelu`` (one kernel instead of five);
* ``Softmax(MatMul(q, k^T) * scale [+ mask]) @ v`` -> ``F.scaled_dot_product_attention`` (fused
  attention kernels on CUDA).

A pattern is fused only when every intermediate value has a single consumer and is no graph output;
the fused node keeps the last node's output name. Fused builders fall back to the unfused
computation where the shapes do not fit (attention on tensors that are not 4-D).
"""

from __future__ import annotations

import math
from typing import Mapping

import attrs
import torch
import torch.nn.functional as F

from edgecore_torch.lowering import Node
from edgecore_torch.ops._registry import OpContext, register

__all__ = ["fuse", "DOMAIN"]

DOMAIN = "edgecore.torch"


# -- the fused operators ----------------------------------------------------------------------------


@register("FusedLinear", domain=DOMAIN)
def _linear(ctx: OpContext):
    return lambda x, w, b: F.linear(x, w.t(), b)


@register("FusedGelu", domain=DOMAIN)
def _gelu(ctx: OpContext):
    return F.gelu


@register("FusedAttention", domain=DOMAIN)
def _attention(ctx: OpContext):
    scale = ctx.attr("scale")
    four_d = ctx.rank(0) == 4 and ctx.rank(1) == 4 and ctx.rank(2) == 4

    def run(q, k_t, v, mask=None):
        if four_d:
            return F.scaled_dot_product_attention(q, k_t.transpose(-1, -2), v, attn_mask=mask, scale=scale)
        scores = torch.matmul(q, k_t) * scale
        if mask is not None:
            scores = scores + mask
        return torch.matmul(torch.softmax(scores, -1), v)

    return run


# -- the pass ---------------------------------------------------------------------------------------


class _Graph:
    def __init__(self, nodes: list[Node], outputs: set[str]) -> None:
        self.nodes = nodes
        self.outputs = outputs
        self.producer = {out: i for i, n in enumerate(nodes) for out in n.outputs if out}
        self.uses: dict[str, int] = {}
        for n in nodes:
            for name in n.inputs:
                if name:
                    self.uses[name] = self.uses.get(name, 0) + 1
        self.dropped: set[int] = set()
        self.replaced: dict[int, Node] = {}

    def single(self, name: str) -> bool:
        return self.uses.get(name, 0) == 1 and name not in self.outputs

    def made_by(self, name: str, op_type: str) -> int | None:
        i = self.producer.get(name)
        if i is None or i in self.dropped or i in self.replaced:
            return None
        node = self.nodes[i]
        return i if node.op_type == op_type and not node.domain else None

    def result(self) -> list[Node]:
        return [self.replaced.get(i, n) for i, n in enumerate(self.nodes) if i not in self.dropped]


def _scalar(constants: Mapping[str, torch.Tensor], name: str) -> float | None:
    value = constants.get(name)
    if value is None or value.numel() != 1 or not value.dtype.is_floating_point:
        return None
    return float(value.reshape(-1)[0])


def _other(node: Node, name: str) -> str:
    a, b = node.inputs[:2]
    return b if a == name else a


def _fuse_linear(g: _Graph, constants: Mapping[str, torch.Tensor]) -> int:
    count = 0
    for i, add in enumerate(g.nodes):
        if add.op_type != "Add" or add.domain or i in g.dropped or i in g.replaced:
            continue
        for side in (0, 1):
            product, bias = add.inputs[side], add.inputs[1 - side]
            j = g.made_by(product, "MatMul")
            w = g.nodes[j].inputs[1] if j is not None else None
            if j is None or not g.single(product) or w not in constants or bias not in constants:
                continue
            if constants[w].dim() != 2 or constants[bias].dim() != 1 or constants[bias].shape[0] != constants[w].shape[1]:
                continue
            if constants[w].dtype != constants[bias].dtype or not constants[w].dtype.is_floating_point:
                continue
            g.replaced[i] = attrs.evolve(add, op_type="FusedLinear", domain=DOMAIN, inputs=(g.nodes[j].inputs[0], w, bias), attrs={})
            g.dropped.add(j)
            count += 1
            break
    return count


def _fuse_gelu(g: _Graph, constants: Mapping[str, torch.Tensor]) -> int:
    count = 0
    for e, erf in enumerate(g.nodes):
        if erf.op_type != "Erf" or erf.domain or not g.single(erf.outputs[0]):
            continue
        s = g.producer.get(erf.inputs[0])
        if s is None or not g.single(erf.inputs[0]):
            continue
        scaled = g.nodes[s]
        if scaled.op_type not in ("Mul", "Div") or scaled.domain:
            continue
        x = next((n for n in scaled.inputs[:2] if n not in constants), None)
        k = _scalar(constants, _other(scaled, x)) if x else None
        if k is None or not math.isclose(k if scaled.op_type == "Mul" else 1 / k, 1 / math.sqrt(2), rel_tol=1e-3):
            continue
        a = next((i for i, n in enumerate(g.nodes) if n.op_type == "Add" and erf.outputs[0] in n.inputs[:2]), None)
        if a is None or _scalar(constants, _other(g.nodes[a], erf.outputs[0])) != 1.0 or not g.single(g.nodes[a].outputs[0]):
            continue
        plus_one = g.nodes[a].outputs[0]
        m = next((i for i, n in enumerate(g.nodes) if n.op_type == "Mul" and plus_one in n.inputs[:2]), None)
        if m is None:
            continue
        partner = _other(g.nodes[m], plus_one)
        drop, last = {s, e, a}, m
        h = g.producer.get(partner)
        if partner == x:  # x * (1 + erf) then * 0.5 (torch's exporter)
            if not g.single(g.nodes[m].outputs[0]):
                continue
            last = next((i for i, n in enumerate(g.nodes) if n.op_type == "Mul" and g.nodes[m].outputs[0] in n.inputs[:2]), None)
            if last is None or _scalar(constants, _other(g.nodes[last], g.nodes[m].outputs[0])) != 0.5:
                continue
            drop.add(m)
        elif h is not None and g.nodes[h].op_type == "Mul" and x in g.nodes[h].inputs[:2] and g.single(partner):
            if _scalar(constants, _other(g.nodes[h], x)) != 0.5:  # (0.5 * x) * (1 + erf) (the zoo)
                continue
            drop.add(h)
        else:
            continue
        if drop & (g.dropped | set(g.replaced)):
            continue
        g.replaced[last] = attrs.evolve(g.nodes[last], op_type="FusedGelu", domain=DOMAIN, inputs=(x,), attrs={})
        g.dropped |= drop
        count += 1
    return count


def _fuse_attention(g: _Graph, constants: Mapping[str, torch.Tensor]) -> int:
    count = 0
    for p, softmax in enumerate(g.nodes):
        if softmax.op_type != "Softmax" or softmax.domain or softmax.attrs.get("axis", -1) != -1 or softmax.opset < 13:
            continue
        if not g.single(softmax.outputs[0]):
            continue
        o = next((i for i, n in enumerate(g.nodes) if n.op_type == "MatMul" and n.inputs[0] == softmax.outputs[0]), None)
        if o is None:
            continue
        value, chain, mask = g.nodes[o].inputs[1], [p], None
        source = softmax.inputs[0]
        a = g.made_by(source, "Add")
        if a is not None and g.single(source):
            scores_side = next((n for n in g.nodes[a].inputs[:2] if g.made_by(n, "Mul") is not None or g.made_by(n, "Div") is not None), None)
            if scores_side is None:
                continue
            mask = _other(g.nodes[a], scores_side)
            chain.append(a)
            source = scores_side
        s = g.made_by(source, "Mul")
        s = s if s is not None else g.made_by(source, "Div")
        if s is None or not g.single(source):
            continue
        scaled = g.nodes[s]
        raw = next((n for n in scaled.inputs[:2] if n not in constants), None)
        factor = _scalar(constants, _other(scaled, raw)) if raw else None
        q = g.made_by(raw, "MatMul") if raw else None
        if factor is None or q is None or not g.single(raw):
            continue
        scale = factor if scaled.op_type == "Mul" else 1.0 / factor
        chain += [s, q]
        if set(chain) & (g.dropped | set(g.replaced)):
            continue
        query, key_t = g.nodes[q].inputs[:2]
        inputs = (query, key_t, value) + ((mask,) if mask else ())
        g.replaced[o] = attrs.evolve(g.nodes[o], op_type="FusedAttention", domain=DOMAIN, inputs=inputs, attrs={"scale": scale})
        g.dropped |= set(chain)
        count += 1
    return count


def fuse(nodes: list[Node], constants: Mapping[str, torch.Tensor], outputs: set[str]) -> tuple[list[Node], dict[str, int]]:
    """``nodes`` with the patterns above fused; and how many of each."""
    counts = {}
    for name, step in (("attention", _fuse_attention), ("gelu", _fuse_gelu), ("linear", _fuse_linear)):
        g = _Graph(nodes, outputs)
        counts[name] = step(g, constants)
        nodes = g.result()
    return nodes, counts
