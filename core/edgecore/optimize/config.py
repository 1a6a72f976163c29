"""What ``engine.optimize`` is asked to do: :class:`OptimizationConfig`, with the seed's field names.

Derive variants with ``attrs.evolve(config, pruning_ratio=0.5)``. Sample data (``calibration_data``,
``labels``) is held by reference and compared by identity: configs are values, arrays are not.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping, Sequence, Union

import attrs
import numpy as np

from edgecore.errors import ConfigurationError

__all__ = [
    "OptimizationConfig",
    "CalibrationData",
    "DEFAULT_KEEP_FP32_OPS",
    "STAGES",
    "PRUNING_MODES",
    "CALIBRATION_METHODS",
    "QUANTIZATION_MODES",
]

#: The order in which stages run. ``precision`` (fp16) runs on float graphs only: after an int8 pass
#: has quantized the graph, the precision stage is skipped and the report says so.
STAGES: tuple[str, ...] = ("graph", "prune", "quantize", "precision")

PRUNING_MODES = ("structured", "unstructured")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
QUANTIZATION_MODES = ("auto", "static", "dynamic")

#: Ops the fp16 pass leaves in float32 unless told otherwise: ranges or reductions that overflow or
#: lose too much in half precision, and ops whose float inputs are coordinates or sizes.
DEFAULT_KEEP_FP32_OPS: frozenset[str] = frozenset(
    {
        "Resize", "Upsample", "RoiAlign", "NonMaxSuppression", "TopK", "Range", "CumSum",
        "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "Exp", "Log", "Pow",
        "Softmax", "LogSoftmax", "LayerNormalization", "Erf", "RandomNormal", "RandomUniform",
        "RandomNormalLike", "RandomUniformLike", "Multinomial", "Einsum",
    }
)

#: Sample inputs: a mapping of input name to an array whose first axis lists the samples, or a
#: sequence of complete feed dicts.
CalibrationData = Union[Mapping[str, np.ndarray], Sequence[Mapping[str, np.ndarray]]]


def _one_of(choices: tuple[str, ...]):
    def check(instance: Any, attribute: attrs.Attribute, value: str) -> None:
        if value not in choices:
            raise ConfigurationError(f"OptimizationConfig.{attribute.name} must be one of {choices}, got {value!r}")

    return check


def _ratio(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigurationError(f"OptimizationConfig.{attribute.name} must lie in [0, 1), got {value}")


def _positive(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ConfigurationError(f"OptimizationConfig.{attribute.name} must be > 0, got {value}")


def _budget(instance: Any, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and (not np.isfinite(value) and value != float("inf")):
        raise ConfigurationError(f"OptimizationConfig.{attribute.name} must be a number or None, got {value}")


def _labels(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise ConfigurationError(f"OptimizationConfig.labels must be a 1-D integer array, got {array.dtype}{list(array.shape)}")
    return array.astype(np.int64, copy=False)


def _options(value: Mapping[str, Any] | None) -> Mapping[str, Mapping[str, Any]]:
    options = {}
    for key, entry in dict(value or {}).items():
        if not isinstance(entry, Mapping):
            raise ConfigurationError(
                f"OptimizationConfig.custom_options maps a pass name to its options, e.g. "
                f"{{'int8': {{'reduce_range': True}}}}; entry {key!r} is {type(entry).__name__}"
            )
        options[str(key)] = MappingProxyType(dict(entry))
    return MappingProxyType(options)


@attrs.frozen(kw_only=True)
class OptimizationConfig:
    """Which optimizations to run and how much accuracy they may cost.

    Stages (each checked against the graph before it, and rolled back when it breaks the budget):

    - ``enable_graph_optimization``: constant folding, dead code, identities, CSE, BatchNormalization
      and constant Add/Mul folded into Conv/Gemm, Transpose/Reshape chains cancelled. Exact.
    - ``enable_pruning``, ``pruning_ratio``, ``pruning_mode``: ``"structured"`` removes that share
      of output channels from each prunable Conv/Gemm (and the matching inputs downstream);
      ``"unstructured"`` zeroes that share of the smallest weights.
    - ``enable_quantization``, ``quantization_type`` (the name of a ``quantize``-stage pass:
      ``"int8"`` is the target backend's own int8 pass when it registers one, e.g. ``openvino_int8``,
      else the portable QDQ pass of the cpu_simd plugin), ``quantization_mode`` (``auto``: dynamic
      for graphs without convolutions, static otherwise), ``calibration_method``, ``per_channel``.
    - ``enable_mixed_precision``, ``mixed_precision_type`` (``"fp16"``), ``keep_fp32_ops``.

    Accuracy: ``calibration_data`` (a mapping of input name to an array whose first axis lists the
    samples, or a list of feed dicts) is what passes are checked on and what int8 calibrates on;
    without it, ``num_samples`` inputs are generated (``seed``, ``sequence_length`` for symbolic
    non-batch dimensions) and the report says so. ``labels`` (one class per sample) turn the check
    into top-1 accuracy. ``accuracy_budget`` is the largest loss allowed against the original model:
    top-1 points when labels are given, else ``1 - cosine similarity`` of the outputs; None means
    1.0 point or 0.01. Exact passes are held to ``exact_tolerance`` (largest output difference
    relative to the output's range) instead.

    ``passes`` names the passes to run, in order, instead of choosing them from the flags.
    ``custom_options`` maps a pass name to its own options (``{"int8": {"reduce_range": True}}``).
    """

    enable_graph_optimization: bool = True
    enable_quantization: bool = False
    quantization_type: str = "int8"
    quantization_mode: str = attrs.field(default="auto", validator=_one_of(QUANTIZATION_MODES))
    calibration_method: str = attrs.field(default="minmax", validator=_one_of(CALIBRATION_METHODS))
    per_channel: bool = True
    enable_pruning: bool = False
    pruning_ratio: float = attrs.field(default=0.3, validator=_ratio)
    pruning_mode: str = attrs.field(default="structured", validator=_one_of(PRUNING_MODES))
    enable_mixed_precision: bool = False
    mixed_precision_type: str = "fp16"
    keep_fp32_ops: frozenset[str] = attrs.field(default=DEFAULT_KEEP_FP32_OPS, converter=frozenset)
    custom_options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, converter=_options)

    calibration_data: CalibrationData | None = attrs.field(default=None, eq=False, repr=False)
    labels: np.ndarray | None = attrs.field(default=None, converter=_labels, eq=False, repr=False)
    num_samples: int = attrs.field(default=16, validator=_positive)
    sequence_length: int = attrs.field(default=32, validator=_positive)
    seed: int = 0
    accuracy_budget: float | None = attrs.field(default=None, validator=_budget)
    exact_tolerance: float = attrs.field(default=1e-3, validator=_positive)
    passes: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def budget(self) -> float:
        """The budget in force: ``accuracy_budget``, or 1.0 top-1 point / 0.01 cosine loss."""
        if self.accuracy_budget is not None:
            return float(self.accuracy_budget)
        return 1.0 if self.labels is not None else 0.01

    def options_for(self, pass_name: str) -> Mapping[str, Any]:
        """``custom_options[pass_name]``, or an empty mapping."""
        return self.custom_options.get(pass_name, MappingProxyType({}))

    def to_json(self) -> dict[str, Any]:
        """The settings (not the data) as JSON-ready values, for reports."""
        out: dict[str, Any] = {}
        for field in attrs.fields(type(self)):
            value = getattr(self, field.name)
            if field.name == "calibration_data":
                out["calibration_data"] = None if value is None else "given"
            elif field.name == "labels":
                out["labels"] = None if value is None else int(len(value))
            elif isinstance(value, frozenset):
                out[field.name] = sorted(value)
            elif isinstance(value, Mapping):
                out[field.name] = {k: dict(v) for k, v in value.items()}
            elif isinstance(value, tuple):
                out[field.name] = list(value)
            else:
                out[field.name] = value
        out["budget_in_force"] = self.budget()
        return out
