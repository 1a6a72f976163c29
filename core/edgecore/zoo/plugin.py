"""The built-in zoo, registered through ``edgecore_models`` like any third-party model plugin.

The tiny variants run the same builders with smaller widths and depths, so tests exercise the very
code that builds the full-size models.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any

from edgecore.hookspecs import hookimpl
from edgecore.specs import ModelSpec

__all__ = ["edgecore_models", "edgecore_resolve_model"]

ZOO_PREFIX = "zoo:"


class _Builder:
    """A builder function of the zoo's modules, imported when first called or inspected: listing
    the zoo (every plugin manager does) imports neither onnx nor numpy."""

    __slots__ = ("_module", "_name")

    def __init__(self, module: str, name: str) -> None:
        self._module, self._name = module, name

    def _target(self) -> Any:
        return getattr(importlib.import_module(self._module), self._name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self._target())

    def __getattr__(self, name: str) -> Any:  # e.g. ``cacheable``
        return getattr(self._target(), name)


build_mobilenet_v2 = _Builder("edgecore.zoo._cnn", "build_mobilenet_v2")
build_resnet = _Builder("edgecore.zoo._cnn", "build_resnet")
build_efficientnet = _Builder("edgecore.zoo._cnn", "build_efficientnet")
build_bert = _Builder("edgecore.zoo._bert", "build_bert")
build_digits_cnn = _Builder("edgecore.zoo._digits", "build_digits_cnn")

_IMAGE = "NCHW float32 'input' [batch, 3, {size}, {size}] -> 'logits' [batch, {classes}]"
_BERT = "int64 input_ids/attention_mask/token_type_ids [batch, sequence] -> last_hidden_state, pooler_output"


@hookimpl
def edgecore_models() -> list[ModelSpec]:
    """MobileNetV2, ResNet-50, EfficientNet-B0, BERT-base, their tiny variants, and the digits CNN."""
    return [
        ModelSpec(
            name="mobilenet_v2",
            builder=build_mobilenet_v2,
            description="MobileNetV2 as torchvision builds it; " + _IMAGE.format(size=224, classes=1000),
            parameters=3_504_872,
        ),
        ModelSpec(
            name="resnet50",
            builder=build_resnet,
            description="ResNet-50 (v1.5) as torchvision builds it; " + _IMAGE.format(size=224, classes=1000),
            parameters=25_557_032,
        ),
        ModelSpec(
            name="efficientnet_b0",
            builder=build_efficientnet,
            description="EfficientNet-B0 as torchvision builds it; " + _IMAGE.format(size=224, classes=1000),
            parameters=5_288_548,
        ),
        ModelSpec(
            name="bert_base",
            builder=build_bert,
            description="BERT-base encoder + pooler as Hugging Face bert-base-uncased; " + _BERT,
            task="feature-extraction",
            parameters=109_482_240,
        ),
        ModelSpec(
            name="mobilenet_v2_tiny",
            builder=functools.partial(
                build_mobilenet_v2,
                width_mult=0.25,
                settings=((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 1, 2), (6, 64, 1, 2), (6, 96, 1, 1)),
                last_channel=64,
                num_classes=10,
                image_size=32,
            ),
            description="MobileNetV2 builder at width 0.25, fewer blocks (tests); "
            + _IMAGE.format(size=32, classes=10),
            parameters=13_882,
        ),
        ModelSpec(
            name="resnet_tiny",
            builder=functools.partial(
                build_resnet, layers=(1, 1, 1, 1), widths=(8, 16, 32, 64), stem=8, num_classes=10, image_size=32
            ),
            description="ResNet-50 builder with one narrow bottleneck per stage (tests); "
            + _IMAGE.format(size=32, classes=10),
            parameters=130_962,
        ),
        ModelSpec(
            name="efficientnet_tiny",
            builder=functools.partial(
                build_efficientnet, width_mult=0.25, depth_mult=0.25, num_classes=10, image_size=32
            ),
            description="EfficientNet-B0 builder at width 0.25, depth 0.25 (tests); "
            + _IMAGE.format(size=32, classes=10),
            parameters=126_822,
        ),
        ModelSpec(
            name="bert_tiny",
            builder=functools.partial(
                build_bert, vocab_size=1000, hidden=64, layers=2, heads=2, intermediate=256, max_positions=128
            ),
            description="BERT builder with 2 layers, hidden 64, 2 heads, vocab 1000 (tests); " + _BERT,
            task="feature-extraction",
            parameters=176_576,
        ),
        ModelSpec(
            name="digits_cnn",
            builder=build_digits_cnn,
            description="CNN trained on scikit-learn's 8x8 digits (98.7% top-1 on its held-out split); "
            "'input' [batch, 1, 8, 8] -> 'logits' [batch, 10]",
            parameters=38_282,
        ),
    ]


@hookimpl
def edgecore_resolve_model(source: str, plugin_manager):
    """``zoo:NAME`` -> the built (or cached) model, looked up in the manager that asks."""
    if not source.startswith(ZOO_PREFIX):
        return None
    from edgecore.zoo import build

    return build(source[len(ZOO_PREFIX) :], plugin_manager=plugin_manager)
