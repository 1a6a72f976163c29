"""INT8 quantization through ``onnxruntime.quantization``, producing portable QDQ ONNX.

Static quantization (convolutional models) calibrates activation ranges on the pass manager's
samples (the caller's calibration data, or generated inputs, which the report says) with min-max,
percentile or entropy calibration, and writes standard ``QuantizeLinear``/``DequantizeLinear``
pairs around the quantized ops, per-channel weights by default, at opset 19 or later: any runtime
that reads ONNX can run it (onnx.reference implements Q/DQ from opset 19), and ONNX Runtime fuses
the pairs into integer kernels. Dynamic quantization (graphs without
convolutions: transformers) quantizes the MatMul/Gemm weights and computes activation scales at run
time (``DynamicQuantizeLinear`` + ``MatMulInteger``, both standard ONNX).

Accuracy-aware: when the quantized graph breaks the budget, nodes are ranked by the error they add
(:mod:`edgecore.optimize.sensitivity`) and the most sensitive ones are excluded from quantization
(re-quantized with the cached calibration ranges) until the budget holds; the report lists them.

Settings (``custom_options["int8"]``), with the defaults chosen by measurement on the CPUs this
project runs on (see docs/optimization.md): ``activation_type`` ``"uint8"`` (ORT's x86 integer
kernels take uint8 activations; int8 activations leave Q/DQ pairs unfused on x86 builds that lack
the s8s8 path), ``weight_type`` ``"int8"``, ``reduce_range`` ``"auto"`` (7-bit weights on x86
without VNNI, where ``vpmaddubsw`` can saturate), ``format`` ``"qdq"`` or ``"qoperator"``,
``op_types`` (which ops to quantize; default: all onnxruntime can), ``fallback`` (default True),
``max_tries`` (default 10), ``exclude`` (node names never quantized), ``percentile`` (default
99.999), ``mode`` (overrides ``quantization_mode``).
"""

from __future__ import annotations

import contextlib
import logging
import platform
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import onnx
import onnx_ir as ir

from edgecore.errors import OptimizationError

if TYPE_CHECKING:
    from edgecore.optimize.manager import PassContext

logger = logging.getLogger(__name__)

__all__ = ["Int8QuantizationPass", "default_reduce_range"]

_OPTIONS = {
    "activation_type", "weight_type", "reduce_range", "format", "op_types", "fallback", "max_tries", "exclude",
    "percentile", "mode",
}
_TYPES = {"uint8": "QUInt8", "int8": "QInt8"}
_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}

def default_reduce_range() -> bool:
    """7-bit weights on x86 CPUs without VNNI (their u8 x s8 multiply-add saturates 16-bit sums)."""
    from edgecore_cpu_simd.cpuinfo import cpu_description

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    _, features = cpu_description()
    return not any("VNNI" in f or "AMX" in f for f in features)


def _is_transformer(model: ir.Model) -> bool:
    ops = {n.op_type for n in ir.traversal.RecursiveGraphIterator(model.graph)}
    return "Conv" not in ops and bool(ops & {"MatMul", "Gemm"})


class _Reader:
    """``CalibrationDataReader`` over the pass manager's samples."""

    def __init__(self, feeds: list[dict[str, Any]]) -> None:
        self._feeds = feeds
        self._iter: Iterator[dict[str, Any]] = iter(feeds)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._iter, None)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iter = iter(self._feeds[start_index:end_index])


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization logs advice through the root logger; keep it out of the caller's logs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


class Int8QuantizationPass(ir.passes.FunctionalPass):
    """INT8 quantization (static QDQ or dynamic), checked and fallen back by accuracy."""

    def __init__(self, context: PassContext, *, options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        options = dict(options or {})
        unknown = set(options) - _OPTIONS
        if unknown:
            raise OptimizationError(f"pass 'int8' does not know option(s) {sorted(unknown)}; known: {sorted(_OPTIONS)}")
        self.context = context
        config = context.config
        self.mode = options.get("mode", config.quantization_mode)
        self.activation_type = self._type(options.get("activation_type", "uint8"), "activation_type")
        self.weight_type = self._type(options.get("weight_type", "int8"), "weight_type")
        rr = options.get("reduce_range", "auto")
        self.reduce_range = default_reduce_range() if rr == "auto" else bool(rr)
        self.format = options.get("format", "qdq")
        if self.format not in ("qdq", "qoperator"):
            raise OptimizationError(f"int8 option format must be 'qdq' or 'qoperator', got {self.format!r}")
        op_types = options.get("op_types")
        if isinstance(op_types, str):  # from the command line: "Conv,MatMul"
            op_types = [t for t in op_types.split(",") if t]
        self.op_types = list(op_types) if op_types else None
        self.fallback = bool(options.get("fallback", True))
        self.max_tries = int(options.get("max_tries", 10))
        exclude = options.get("exclude", ())
        self.exclude = [n for n in exclude.split(",") if n] if isinstance(exclude, str) else list(exclude)
        self.percentile = float(options.get("percentile", 99.999))
        self.method = config.calibration_method
        self.per_channel = config.per_channel

    @staticmethod
    def _type(name: str, option: str) -> str:
        if name not in _TYPES:
            raise OptimizationError(f"int8 option {option} must be one of {sorted(_TYPES)}, got {name!r}")
        return name

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        context = self.context
        mode = self.mode
        if mode == "auto":
            mode = "dynamic" if _is_transformer(model) else "static"
        context.detail("mode", mode)
        context.detail("weight_type", self.weight_type)
        context.detail("per_channel", self.per_channel)
        context.detail("reduce_range", self.reduce_range)
        with tempfile.TemporaryDirectory(prefix="edgecore-int8-") as tmp, _quiet():
            folder = Path(tmp)
            source = folder / "float.onnx"
            proto = ir.to_proto(model)
            # edgecore's graph pass did what ORT's pre-processing does (folding, shape inference)
            onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props},
                                                "onnx.quant.pre_process": "edgecore"})
            onnx.save_model(proto, str(source))
            if mode == "dynamic":
                quantized = self._dynamic(source, folder)
                return ir.passes.PassResult(quantized, modified=True)
            return self._static(model, source, folder)

    # -- dynamic -------------------------------------------------------------------------------------------

    def _dynamic(self, source: Path, folder: Path) -> ir.Model:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        target = folder / "dynamic.onnx"
        op_types = self.op_types or ["MatMul", "Gemm"]
        quantize_dynamic(
            source, target, op_types_to_quantize=op_types, per_channel=self.per_channel,
            reduce_range=self.reduce_range, weight_type=getattr(QuantType, _TYPES[self.weight_type]),
            nodes_to_exclude=self.exclude,
        )
        self.context.detail("op_types", op_types)
        self.context.note(
            f"dynamic int8: {', '.join(op_types)} weights quantized, activation scales computed at run time"
        )
        return _portable(target)

    # -- static --------------------------------------------------------------------------------------------

    def _static(self, model: ir.Model, source: Path, folder: Path) -> ir.passes.PassResult:
        from edgecore.optimize.sensitivity import fallback_search, rank_nodes

        context = self.context
        feeds = [dict(f) for f in context.samples.feeds]
        cache = folder / "calibration.json"
        context.detail("activation_type", self.activation_type)
        context.detail("calibration", self.method)
        context.detail("format", self.format)
        samples = context.samples
        if samples.generated:
            context.note(f"calibrated on {samples.rows} generated inputs (no calibration data given): ranges may "
                         f"not match real data")
        else:
            context.note(f"calibrated ({self.method}) on {samples.rows} calibration samples, the same the check uses")
        count = [0]

        def quantize(exclude: frozenset[str]) -> ir.Model:
            count[0] += 1
            target = folder / f"static{count[0]}.onnx"
            self._quantize_static(source, target, _Reader(feeds), cache, sorted(set(self.exclude) | exclude))
            return _portable(target)

        quantized = quantize(frozenset())
        quantized_nodes = _quantized_nodes(model, quantized)
        context.detail("nodes_quantized", len(quantized_nodes))
        loss = context.measure(quantized)
        if context.within_budget(loss) or not self.fallback:
            context.detail("kept_float_nodes", sorted(self.exclude))
            return ir.passes.PassResult(quantized, modified=True)
        context.note(f"full int8 lost {loss:.4g}; searching for the most sensitive nodes to keep in float")
        ranked = rank_nodes(context, model, quantized, quantized_nodes)
        result = fallback_search(context, ranked, quantize, max_tries=self.max_tries)
        context.detail("fallback_tries", [list(t) for t in result.tries])
        if result.model is None:
            context.note("no fallback within the tries met the budget")
            return ir.passes.PassResult(quantized, modified=True)  # rolled back by the manager, with the loss
        context.detail("kept_float_nodes", sorted(set(self.exclude) | set(result.kept_float)))
        context.note(f"kept in float for accuracy: {', '.join(result.kept_float)}")
        return ir.passes.PassResult(result.model, modified=True)

    def _quantize_static(self, source: Path, target: Path, reader: _Reader, cache: Path, exclude: list[str]) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        extra: dict[str, Any] = {}
        if self.method == "percentile":
            extra["CalibPercentile"] = self.percentile
        quantize_static(
            source,
            target,
            reader,
            quant_format=QuantFormat.QDQ if self.format == "qdq" else QuantFormat.QOperator,
            op_types_to_quantize=self.op_types,
            per_channel=self.per_channel,
            reduce_range=self.reduce_range,
            activation_type=getattr(QuantType, _TYPES[self.activation_type]),
            weight_type=getattr(QuantType, _TYPES[self.weight_type]),
            nodes_to_exclude=exclude,
            calibrate_method=getattr(CalibrationMethod, _METHODS[self.method]),
            extra_options=extra,
            calibration_cache_path=cache,
        )


#: The lowest opset at which onnx.reference (and the ``reference`` backend) runs Q/DQ ops.
PORTABLE_OPSET = 19


def _portable(path: Path) -> ir.Model:
    """The quantized model at opset >= 19, so that every ONNX runtime, onnx.reference included, runs it."""
    proto = onnx.load_model(str(path))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < PORTABLE_OPSET:
        from onnx import version_converter

        try:
            proto = version_converter.convert_version(proto, PORTABLE_OPSET)
        except Exception as exc:  # keep the model as quantized: onnxruntime runs it either way
            logger.warning("could not convert the int8 model to opset %d: %r", PORTABLE_OPSET, exc)
    return ir.from_proto(proto)


def _quantized_nodes(float_model: ir.Model, quantized: ir.Model) -> list[str]:
    """Names of float-graph nodes that the quantizer wrapped in Q/DQ (or turned into integer ops)."""
    names = {n.name for n in float_model.graph if n.name and n.op_type in ("Conv", "MatMul", "Gemm", "Add", "Mul",
                                                                            "ConvTranspose")}
    found = []
    for node in quantized.graph:
        if node.name in names and any(
            v is not None and v.producer() is not None and v.producer().op_type == "DequantizeLinear"
            for v in node.inputs
        ):
            found.append(node.name)
    for node in quantized.graph:  # QOperator format renames nothing but changes the op type
        if node.name in names and node.op_type.startswith(("QLinear", "QGemm")) and node.name not in found:
            found.append(node.name)
    return found
