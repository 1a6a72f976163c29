"""A small graph builder over ``onnx.helper`` that the zoo's architectures share.

:class:`GraphBuilder` appends nodes and seeded initializers and hands out :class:`Value`\\ s. Each value
carries a *probe*: the numpy result of the same layer on a small batch of random images. The probe is
how batch-norm statistics come out realistic without training: each ``BatchNormalization`` takes its
running mean and variance from the probe activations that reach it (with a little noise, as a trained
network's running averages would have), so activations keep a sane scale through any depth, and the
weights, statistics and activations look like a trained network's to quantization and pruning passes.

Only trainable tensors become initializers (conv and linear weights and biases, BN gamma and beta, BN
running statistics as the two buffers every ``BatchNormalization`` has, embeddings, LayerNorm
scales); shape constants and scalars are ``Constant`` nodes, so that counting the parameters of a
built model is a sum over its float initializers minus the BN buffers (see :func:`count_parameters`).

Not thread-safe: one builder belongs to one build call.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import attrs
import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper

logger = logging.getLogger(__name__)

__all__ = ["OPSET", "Value", "GraphBuilder", "count_parameters", "make_divisible"]

#: The opset every zoo model is written for.
OPSET = 17


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count the way torchvision's ``_make_divisible`` does (never down by > 10%)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@attrs.frozen(eq=False)
class Value:
    """A tensor of the graph under construction: its name and its probe activation (or None)."""

    name: str
    probe: np.ndarray | None = None

    @property
    def channels(self) -> int:
        """Size of axis 1 of the probe (channels of an NCHW activation)."""
        assert self.probe is not None, f"{self.name} has no probe"
        return int(self.probe.shape[1])


def count_parameters(model: onnx.ModelProto) -> int:
    """Trainable parameters of ``model``, counted as PyTorch counts ``parameters()``.

    The sum of the sizes of the float initializers, less the running mean and variance of every
    ``BatchNormalization`` (buffers, not parameters).
    """
    buffers = {n.input[i] for n in model.graph.node if n.op_type == "BatchNormalization" for i in (3, 4)}
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
    return sum(
        math.prod(init.dims)
        for init in model.graph.initializer
        if init.data_type in floats and init.name not in buffers
    )


class GraphBuilder:
    """Append-only builder of one ONNX graph with seeded weights and probe activations."""

    def __init__(self, *, seed: int, prefix: str = "") -> None:
        self.rng = np.random.default_rng(seed)
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._names: dict[str, int] = {}
        self._consts: dict[tuple, str] = {}

    # -- names, tensors, nodes ---------------------------------------------------------------------

    def fresh(self, base: str) -> str:
        """A name not used before in this graph, derived from ``base``."""
        count = self._names.get(base, 0)
        self._names[base] = count + 1
        return base if count == 0 else f"{base}_{count}"

    def initializer(self, name: str, array: np.ndarray) -> str:
        """Add ``array`` as an initializer under a fresh name derived from ``name``."""
        name = self.fresh(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value: float | int | Sequence[int], dtype: type = np.float32) -> str:
        """A ``Constant`` node's output holding ``value`` (deduplicated: one node per value)."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            name = self.fresh("const")
            self.nodes.append(
                helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(array, name))
            )
            self._consts[key] = name
        return self._consts[key]

    def node(self, op: str, inputs: Sequence[str], *, name: str, outputs: int = 1, **attributes) -> list[str]:
        """Append one node named ``name`` (made unique) and return its output names."""
        name = self.fresh(name)
        outs = [name] if outputs == 1 else [f"{name}_out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, **attributes))
        return outs

    def op(self, op: str, inputs: Sequence[Value | str], probe: np.ndarray | None, *, name: str, **attributes) -> Value:
        """Append a single-output node; ``probe`` is its numpy result (or None)."""
        names = [v.name if isinstance(v, Value) else v for v in inputs]
        return Value(self.node(op, names, name=name, **attributes)[0], probe)

    def add_input(
        self, name: str, elem_type: int, shape: Sequence[int | str], probe: np.ndarray | None = None
    ) -> Value:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        self._names[name] = 1
        return Value(name, probe)

    def add_output(self, value: Value, name: str, elem_type: int, shape: Sequence[int | str]) -> None:
        """Expose ``value`` as graph output ``name`` (through an Identity if the name differs)."""
        if value.name != name:
            self.nodes.append(helper.make_node("Identity", [value.name], [name], name=self.fresh(f"{name}_identity")))
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))

    def model(self, graph_name: str, *, doc: str = "") -> onnx.ModelProto:
        """The finished model: opset 17, the lowest IR version that carries it."""
        graph = helper.make_graph(self.nodes, graph_name, self.inputs, self.outputs, self.initializers)
        opsets = [helper.make_opsetid("", OPSET)]
        model = helper.make_model(
            graph,
            opset_imports=opsets,
            producer_name="edgecore.zoo",
            doc_string=doc,
        )
        model.ir_version = helper.find_min_ir_version_for(opsets)
        return model

    # -- weights ---------------------------------------------------------------------------------------

    def normal(self, shape: Sequence[int], std: float, mean: float = 0.0) -> np.ndarray:
        out = self.rng.standard_normal(tuple(shape), dtype=np.float32)
        out *= np.float32(std)
        if mean:
            out += np.float32(mean)
        return out

    # -- CNN layers ------------------------------------------------------------------------------------

    def conv(
        self,
        x: Value,
        out_channels: int,
        kernel: int,
        *,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        name: str,
    ) -> Value:
        """Conv2d with 'same'-style padding ``(kernel - 1) // 2``.

        Weights are Kaiming-normal in fan-out mode (torchvision's init for these models), each output
        channel scaled by a log-normal factor so channels differ in range as trained ones do.
        """
        in_channels = x.channels
        fan_out = out_channels * kernel * kernel // groups
        w = self.normal((out_channels, in_channels // groups, kernel, kernel), math.sqrt(2.0 / fan_out))
        w *= np.exp(self.normal((out_channels, 1, 1, 1), 0.25))
        inputs = [x.name, self.initializer(f"{name}.weight", w)]
        b = None
        if bias:
            b = self.normal((out_channels,), 0.02)
            inputs.append(self.initializer(f"{name}.bias", b))
        pad = (kernel - 1) // 2
        probe = None if x.probe is None else _conv_probe(x.probe, w, b, stride, pad, groups)
        return self.op(
            "Conv", inputs, probe, name=name,
            kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4, group=groups,
        )

    def batch_norm(self, x: Value, *, name: str, eps: float = 1e-5, gamma_mean: float = 1.0) -> Value:
        """BatchNormalization whose running statistics are those of the probe activation, jittered.

        ``gamma_mean`` below one models the small last-BN scales of trained residual branches.
        """
        c = x.channels
        gamma = np.abs(self.normal((c,), 0.2 * gamma_mean, gamma_mean)) + np.float32(0.05)
        beta = self.normal((c,), 0.1)
        if x.probe is not None:
            mean = x.probe.mean(axis=(0, 2, 3)).astype(np.float32)
            var = x.probe.var(axis=(0, 2, 3)).astype(np.float32)
            var = np.maximum(var, np.float32(0.01) * np.median(var) + np.float32(1e-4))
        else:
            mean = np.zeros(c, np.float32)
            var = np.ones(c, np.float32)
        mean = mean + self.normal((c,), 0.05) * np.sqrt(var)
        var = var * np.exp(self.normal((c,), 0.1))
        names = [
            self.initializer(f"{name}.{part}", arr)
            for part, arr in (("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", var))
        ]
        probe = None
        if x.probe is not None:
            scale = (gamma / np.sqrt(var + np.float32(eps)))[None, :, None, None]
            probe = ((x.probe - mean[None, :, None, None]) * scale + beta[None, :, None, None]).astype(np.float32)
        return self.op("BatchNormalization", [x.name, *names], probe, name=name, epsilon=eps)

    def relu(self, x: Value, *, name: str) -> Value:
        return self.op("Relu", [x], _map(x.probe, lambda p: np.maximum(p, 0)), name=name)

    def relu6(self, x: Value, *, name: str) -> Value:
        """ReLU6 as ``Clip(x, 0, 6)``."""
        inputs = [x.name, self.const(0.0), self.const(6.0)]
        return self.op("Clip", inputs, _map(x.probe, lambda p: np.clip(p, 0, 6)), name=name)

    def sigmoid(self, x: Value, *, name: str) -> Value:
        return self.op("Sigmoid", [x], _map(x.probe, _sigmoid), name=name)

    def silu(self, x: Value, *, name: str) -> Value:
        """SiLU (swish) as ``x * Sigmoid(x)``: opset 17 has no single operator for it."""
        s = self.sigmoid(x, name=f"{name}.sigmoid")
        return self.mul(x, s, name=name)

    def add(self, a: Value, b: Value, *, name: str) -> Value:
        probe = None if a.probe is None or b.probe is None else a.probe + b.probe
        return self.op("Add", [a, b], probe, name=name)

    def mul(self, a: Value, b: Value, *, name: str) -> Value:
        probe = None if a.probe is None or b.probe is None else a.probe * b.probe
        return self.op("Mul", [a, b], probe, name=name)

    def max_pool(self, x: Value, kernel: int, stride: int, pad: int, *, name: str) -> Value:
        probe = None if x.probe is None else _max_pool_probe(x.probe, kernel, stride, pad)
        return self.op(
            "MaxPool", [x], probe, name=name, kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4
        )

    def global_avg_pool(self, x: Value, *, name: str) -> Value:
        return self.op("GlobalAveragePool", [x], _map(x.probe, lambda p: p.mean(axis=(2, 3), keepdims=True)), name=name)

    def flatten(self, x: Value, *, name: str) -> Value:
        return self.op("Flatten", [x], _map(x.probe, lambda p: p.reshape(p.shape[0], -1)), name=name, axis=1)

    def linear(self, x: Value, out_features: int, *, name: str) -> Value:
        """Fully connected layer as ``Gemm(x, W, b, transB=1)``, W stored [out, in] as in PyTorch."""
        in_features = int(x.probe.shape[1]) if x.probe is not None else None
        assert in_features is not None, "linear() needs a probe to know its input width"
        w = self.normal((out_features, in_features), 1.0 / math.sqrt(in_features))
        b = self.normal((out_features,), 0.01)
        inputs = [x.name, self.initializer(f"{name}.weight", w), self.initializer(f"{name}.bias", b)]
        probe = None if x.probe is None else x.probe @ w.T + b
        return self.op("Gemm", inputs, probe, name=name, transB=1)


# -- numpy reference of the layers, used for the probe only ----------------------------------------------


def _map(probe: np.ndarray | None, fn) -> np.ndarray | None:
    return None if probe is None else fn(probe).astype(np.float32, copy=False)


def _sigmoid(p: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * p) + 1.0)


def _conv_probe(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int, pad: int, groups: int) -> np.ndarray:
    n, c, h, wd = x.shape
    o, cg, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    ho = (h + 2 * pad - k) // stride + 1
    wo = (wd + 2 * pad - k) // stride + 1
    if groups == 1:
        if k == 1:
            cols = np.ascontiguousarray(xp[:, :, ::stride, ::stride][:, :, :ho, :wo]).reshape(n, c, ho * wo)
            out = np.matmul(w[:, :, 0, 0], cols).reshape(n, o, ho, wo)
        else:
            win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :ho, :wo]
            cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k)
            out = (cols @ w.reshape(o, -1).T).reshape(n, ho, wo, o).transpose(0, 3, 1, 2)
    elif groups == c == o and cg == 1:  # depthwise
        out = np.zeros((n, o, ho, wo), np.float32)
        for i in range(k):
            for j in range(k):
                patch = xp[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
                out += patch * w[None, :, 0, i, j, None, None]
    else:  # pragma: no cover - no zoo architecture uses other groupings
        raise NotImplementedError(f"probe of a conv with groups={groups}, channels {c} -> {o}")
    if b is not None:
        out = out + b[None, :, None, None]
    return np.ascontiguousarray(out, dtype=np.float32)


def _max_pool_probe(x: np.ndarray, kernel: int, stride: int, pad: int) -> np.ndarray:
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf) if pad else x
    win = sliding_window_view(xp, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.ascontiguousarray(win.max(axis=(4, 5)), dtype=np.float32)
