"""Image classifiers, layer for layer as torchvision builds them: MobileNetV2, ResNet, EfficientNet.

Each builder takes torchvision's own knobs (width and depth multipliers, block counts) so that the
full-size models and the tiny test variants come from the same code. Every model has one NCHW float32
input ``input`` of shape ``[batch, 3, H, W]`` and one output ``logits`` of shape
``[batch, num_classes]``; batch-norm nodes stay in the graph (a pass may fold them).

Parameter counts equal torchvision's: MobileNetV2 3,504,872; ResNet-50 25,557,032;
EfficientNet-B0 5,288,548.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto

from edgecore.zoo._builder import GraphBuilder, Value, make_divisible

__all__ = [
    "MOBILENET_V2_SETTINGS",
    "EFFICIENTNET_B0_STAGES",
    "build_mobilenet_v2",
    "build_resnet",
    "build_efficientnet",
]

#: torchvision's inverted-residual settings of MobileNetV2: (expand ratio t, channels c, repeats n, stride s).
MOBILENET_V2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

#: torchvision's EfficientNet-B0 stages: (expand ratio, kernel, stride, in channels, out channels, layers).
EFFICIENTNET_B0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)

#: The probe (random images through which batch-norm statistics are measured) holds about this many
#: pixels, in at most PROBE_MAX_BATCH images: small images need more of them, or the last stages'
#: statistics would rest on a handful of values.
PROBE_PIXELS = 2 * 224 * 224
PROBE_MAX_BATCH = 32


def _start(seed: int, image_size: int) -> tuple[GraphBuilder, Value]:
    b = GraphBuilder(seed=seed)
    batch = min(PROBE_MAX_BATCH, max(2, math.ceil(PROBE_PIXELS / image_size**2)))
    shape = (batch, 3, image_size, image_size)
    probe = np.random.default_rng([seed, 1]).standard_normal(shape, dtype=np.float32)
    x = b.add_input("input", TensorProto.FLOAT, ["batch", 3, image_size, image_size], probe)
    return b, x


def _finish(b: GraphBuilder, features: Value, num_classes: int, *, graph_name: str, doc: str) -> onnx.ModelProto:
    pooled = b.global_avg_pool(features, name="avgpool")
    flat = b.flatten(pooled, name="flatten")
    logits = b.linear(flat, num_classes, name="fc")
    b.add_output(logits, "logits", TensorProto.FLOAT, ["batch", num_classes])
    return b.model(graph_name, doc=doc)


def _conv_bn_act(b: GraphBuilder, x: Value, out: int, kernel: int, *, stride: int = 1, groups: int = 1,
                 act: str | None, name: str, gamma_mean: float = 1.0) -> Value:
    """torchvision's ``Conv2dNormActivation``: bias-free conv, batch norm, optional activation."""
    y = b.conv(x, out, kernel, stride=stride, groups=groups, name=f"{name}.conv")
    y = b.batch_norm(y, name=f"{name}.bn", gamma_mean=gamma_mean)
    if act == "relu":
        return b.relu(y, name=f"{name}.relu")
    if act == "relu6":
        return b.relu6(y, name=f"{name}.relu6")
    if act == "silu":
        return b.silu(y, name=f"{name}.silu")
    assert act is None, act
    return y


# -- MobileNetV2 ---------------------------------------------------------------------------------------


def build_mobilenet_v2(
    *,
    seed: int = 0,
    width_mult: float = 1.0,
    settings: Sequence[Sequence[int]] = MOBILENET_V2_SETTINGS,
    last_channel: int | None = None,
    num_classes: int = 1000,
    image_size: int = 224,
) -> onnx.ModelProto:
    """MobileNetV2 (Sandler et al. 2018) as ``torchvision.models.mobilenet_v2``: ReLU6 as Clip(0, 6).

    ``last_channel`` defaults to torchvision's ``make_divisible(1280 * max(1, width_mult))``.
    """
    b, x = _start(seed, image_size)
    channels = make_divisible(32 * width_mult)
    if last_channel is None:
        last_channel = make_divisible(1280 * max(1.0, width_mult))
    x = _conv_bn_act(b, x, channels, 3, stride=2, act="relu6", name="features.0")
    index = 1
    for t, c, n, s in settings:
        out = make_divisible(c * width_mult)
        for i in range(n):
            stride = s if i == 0 else 1
            name = f"features.{index}"
            hidden = int(round(channels * t))
            y = x
            if t != 1:
                y = _conv_bn_act(b, y, hidden, 1, act="relu6", name=f"{name}.expand")
            y = _conv_bn_act(b, y, hidden, 3, stride=stride, groups=hidden, act="relu6", name=f"{name}.dw")
            residual = stride == 1 and channels == out
            y = _conv_bn_act(b, y, out, 1, act=None, name=f"{name}.project", gamma_mean=0.5 if residual else 1.0)
            x = b.add(x, y, name=f"{name}.add") if residual else y
            channels = out
            index += 1
    x = _conv_bn_act(b, x, last_channel, 1, act="relu6", name=f"features.{index}")
    return _finish(b, x, num_classes, graph_name="mobilenet_v2", doc=f"MobileNetV2 width {width_mult}, seed {seed}")


# -- ResNet (bottleneck, v1.5: stride on the 3x3 conv) -------------------------------------------------


def build_resnet(
    *,
    seed: int = 0,
    layers: Sequence[int] = (3, 4, 6, 3),
    widths: Sequence[int] = (64, 128, 256, 512),
    stem: int = 64,
    num_classes: int = 1000,
    image_size: int = 224,
) -> onnx.ModelProto:
    """ResNet with bottleneck blocks as ``torchvision.models.resnet50`` (expansion 4, ResNet v1.5)."""
    expansion = 4
    b, x = _start(seed, image_size)
    x = _conv_bn_act(b, x, stem, 7, stride=2, act="relu", name="stem")
    x = b.max_pool(x, 3, 2, 1, name="maxpool")
    for stage, (blocks, width) in enumerate(zip(layers, widths), start=1):
        for i in range(blocks):
            stride = 2 if stage > 1 and i == 0 else 1
            name = f"layer{stage}.{i}"
            y = _conv_bn_act(b, x, width, 1, act="relu", name=f"{name}.1")
            y = _conv_bn_act(b, y, width, 3, stride=stride, act="relu", name=f"{name}.2")
            y = _conv_bn_act(b, y, width * expansion, 1, act=None, name=f"{name}.3", gamma_mean=0.5)
            shortcut = x
            if stride != 1 or x.channels != width * expansion:
                shortcut = _conv_bn_act(b, x, width * expansion, 1, stride=stride, act=None, name=f"{name}.downsample")
            x = b.relu(b.add(y, shortcut, name=f"{name}.add"), name=f"{name}.relu")
    depth = 2 + 3 * sum(layers)
    return _finish(b, x, num_classes, graph_name=f"resnet{depth}", doc=f"ResNet-{depth} (bottleneck), seed {seed}")


# -- EfficientNet ----------------------------------------------------------------------------------------


def _squeeze_excitation(b: GraphBuilder, x: Value, squeeze: int, *, name: str) -> Value:
    """torchvision's ``SqueezeExcitation`` with SiLU: pool, 1x1 conv, SiLU, 1x1 conv, Sigmoid, scale."""
    s = b.global_avg_pool(x, name=f"{name}.avgpool")
    s = b.silu(b.conv(s, squeeze, 1, bias=True, name=f"{name}.fc1"), name=f"{name}.silu")
    s = b.sigmoid(b.conv(s, x.channels, 1, bias=True, name=f"{name}.fc2"), name=f"{name}.sigmoid")
    return b.mul(x, s, name=f"{name}.scale")


def build_efficientnet(
    *,
    seed: int = 0,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    stages: Sequence[Sequence[int]] = EFFICIENTNET_B0_STAGES,
    num_classes: int = 1000,
    image_size: int = 224,
) -> onnx.ModelProto:
    """EfficientNet (Tan and Le 2019) as ``torchvision.models.efficientnet_b0`` for multipliers 1.0/1.0.

    MBConv blocks: 1x1 expansion, depthwise kxk, squeeze-excitation, 1x1 projection; SiLU is
    ``x * Sigmoid(x)``.
    """

    def adjust(channels: int) -> int:
        return make_divisible(channels * width_mult)

    b, x = _start(seed, image_size)
    x = _conv_bn_act(b, x, adjust(stages[0][3]), 3, stride=2, act="silu", name="features.0")
    for stage, (expand, kernel, stride, cin, cout, repeats) in enumerate(stages, start=1):
        cin, cout = adjust(cin), adjust(cout)
        for i in range(int(math.ceil(repeats * depth_mult))):
            name = f"features.{stage}.{i}"
            block_in = cin if i == 0 else cout
            block_stride = stride if i == 0 else 1
            expanded = make_divisible(block_in * expand)
            y = x
            if expanded != block_in:
                y = _conv_bn_act(b, y, expanded, 1, act="silu", name=f"{name}.expand")
            y = _conv_bn_act(
                b, y, expanded, kernel, stride=block_stride, groups=expanded, act="silu", name=f"{name}.dw"
            )
            y = _squeeze_excitation(b, y, max(1, block_in // 4), name=f"{name}.se")
            residual = block_stride == 1 and block_in == cout
            y = _conv_bn_act(b, y, cout, 1, act=None, name=f"{name}.project", gamma_mean=0.5 if residual else 1.0)
            x = b.add(x, y, name=f"{name}.add") if residual else y
    x = _conv_bn_act(b, x, 4 * adjust(stages[-1][4]), 1, act="silu", name=f"features.{len(stages) + 1}")
    return _finish(
        b, x, num_classes, graph_name="efficientnet",
        doc=f"EfficientNet width {width_mult} depth {depth_mult}, seed {seed}",
    )
