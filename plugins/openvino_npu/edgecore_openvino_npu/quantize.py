"""INT8 post-training quantization with NNCF, for OpenVINO: the ``openvino_int8`` pass.

Contract
--------
:func:`quantize_int8` takes an edgecore :class:`~edgecore.graph.Graph` and calibration data and
returns a new Graph: the same model with QuantizeLinear/DequantizeLinear pairs (QDQ) on weights and
activations, chosen by NNCF with OpenVINO's CPU/NPU quantization rules. Staying in ONNX keeps the
graph a Graph (fingerprint, caching, checks by the PassManager); OpenVINO's ONNX frontend turns QDQ
pairs into its FakeQuantize form and runs integer kernels. NNCF's ONNX path collects activation
statistics with onnxruntime.

``calibration_data``: an iterable of feed dicts, a mapping of input name to an array whose first
axis lists the samples (split into one-sample feeds), or one array for a single-input model.

With ``validation_fn`` the accuracy-controlled variant runs (``nncf.quantize_with_accuracy_control``):
layers are returned to float, most harmful first, until the metric drops at most ``max_drop``
(absolute, in the metric's units). ``validation_fn(run, items) -> float`` gets ``run(feed) -> list
of output arrays`` -- the candidate compiled by OpenVINO on the CPU -- and the ``validation_data``
items; higher is better.

The pass (:class:`Int8QuantizePass`) is what ``PassSpec.factory(context)`` returns for edgecore's
PassManager: an ``onnx_ir`` pass that calibrates on ``context.samples`` and, when those samples carry
labels, runs the accuracy-controlled variant on top-1 accuracy with ``max_drop`` = the budget.
Options (``OptimizationConfig.custom_options["openvino_int8"]``): ``subset_size``, ``preset``
("performance" or "mixed"), ``model_type`` ("transformer"), ``fast_bias_correction``,
``ignored_ops`` (op types kept in float), ``accuracy_control`` (False turns it off).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from edgecore.errors import OptimizationError
from edgecore.graph import Graph

logger = logging.getLogger(__name__)

__all__ = ["quantize_int8", "Int8QuantizePass", "PASS_NAME"]

PASS_NAME = "openvino_int8"
_OPTIONS = ("subset_size", "preset", "model_type", "fast_bias_correction", "ignored_ops", "accuracy_control")


def _feeds(graph: Graph, data: Any) -> list[dict[str, np.ndarray]]:
    names = [s.name for s in graph.inputs]
    if isinstance(data, np.ndarray):
        if len(names) != 1:
            raise OptimizationError(f"one calibration array given, but {graph.name} takes inputs {names}")
        data = {names[0]: data}
    if isinstance(data, Mapping):
        missing = [n for n in names if n not in data]
        if missing:
            raise OptimizationError(f"calibration data lacks input(s) {missing}; {graph.name} takes {names}")
        rows = {len(np.asarray(data[n])) for n in names}
        if len(rows) != 1:
            raise OptimizationError(f"calibration inputs hold different sample counts: {sorted(rows)}")
        arrays = {n: np.asarray(data[n]) for n in names}
        return [{n: np.ascontiguousarray(a[i : i + 1]) for n, a in arrays.items()} for i in range(rows.pop())]
    feeds = [dict(feed) for feed in data]
    for i, feed in enumerate(feeds):
        missing = [n for n in names if n not in feed]
        if missing:
            raise OptimizationError(f"calibration feed {i} lacks input(s) {missing}; {graph.name} takes {names}")
    if not feeds:
        raise OptimizationError("calibration data holds no samples")
    return feeds


def _openvino_runner(model: Any) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
    """``run(feed) -> outputs`` for an ONNX ModelProto, compiled by OpenVINO on the CPU at f32."""
    from edgecore_openvino_npu import _ov

    compiled = _ov.core().compile_model(
        model.SerializeToString(), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}, weights=b""
    )
    request = compiled.create_infer_request()

    def run(feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        result = request.infer(dict(feed))
        return [np.array(result[port], copy=True) for port in compiled.outputs]

    return run


def _model_type(graph: Graph, value: Any) -> Any:
    import nncf

    if value is not None:
        if str(value).lower() != "transformer":
            raise OptimizationError(f"openvino_int8 model_type must be 'transformer' or None, got {value!r}")
        return nncf.ModelType.TRANSFORMER
    ops = {op for _, op in graph.op_types()}
    if {"MatMul", "Softmax"} <= ops and not ops & {"Conv", "ConvTranspose"}:
        return nncf.ModelType.TRANSFORMER  # attention: NNCF's transformer patterns keep it accurate
    return None


def quantize_int8(
    graph: Graph,
    calibration_data: Any,
    *,
    validation_fn: Callable[[Callable[..., list[np.ndarray]], Iterable[Any]], float] | None = None,
    validation_data: Sequence[Any] | None = None,
    max_drop: float = 0.01,
    subset_size: int = 300,
    preset: str | None = None,
    model_type: str | None = None,
    fast_bias_correction: bool = True,
    ignored_ops: Sequence[str] = (),
) -> Graph:
    """``graph`` quantized to INT8 (QDQ) by NNCF on ``calibration_data``; see the module docstring."""
    try:
        import nncf
    except ImportError as exc:
        raise OptimizationError(f"openvino_int8 needs NNCF ({exc}); pip install nncf") from exc
    feeds = _feeds(graph, calibration_data)
    kwargs: dict[str, Any] = dict(
        subset_size=min(subset_size, len(feeds)),
        fast_bias_correction=fast_bias_correction,
        model_type=_model_type(graph, model_type),
    )
    if preset is not None:
        try:
            kwargs["preset"] = nncf.QuantizationPreset(str(preset).lower())
        except ValueError:
            raise OptimizationError(f"openvino_int8 preset must be 'performance' or 'mixed', got {preset!r}") from None
    if ignored_ops:
        kwargs["ignored_scope"] = nncf.IgnoredScope(types=list(ignored_ops))
    calibration = nncf.Dataset(feeds)
    proto = graph.to_proto()
    try:
        if validation_fn is None:
            quantized = nncf.quantize(proto, calibration, **kwargs)
        else:
            items = list(validation_data if validation_data is not None else feeds)

            runners: list[tuple[Any, Callable[..., list[np.ndarray]]]] = []  # NNCF validates item by item

            def nncf_validation(model: Any, data: Iterable[Any]) -> float:
                if not runners or runners[-1][0] is not model:
                    runners[:] = [(model, _openvino_runner(model))]
                return float(validation_fn(runners[-1][1], data))

            quantized = nncf.quantize_with_accuracy_control(
                proto, calibration, nncf.Dataset(items), nncf_validation, max_drop=max_drop, **kwargs
            )
    except OptimizationError:
        raise
    except Exception as exc:
        raise OptimizationError(f"NNCF could not quantize {graph.name}: {exc!r}") from exc
    return Graph.from_proto(quantized, source=f"{graph.source} ({PASS_NAME})", check=False)


def _top1_validation(labels_of: Callable[[Any], np.ndarray]) -> Callable[..., Any]:
    """A validation_fn for items ``(feed, labels)``: top-1 accuracy of the first 2-D output."""

    def validate(run: Callable[..., list[np.ndarray]], items: Iterable[Any]) -> float:
        correct = total = 0
        for feed, labels in items:
            scores = next(o for o in run(feed) if o.ndim == 2)
            correct += int((scores.argmax(axis=1) == labels_of(labels)).sum())
            total += len(labels)
        return correct / max(total, 1)

    return validate


class Int8QuantizePass(ir.passes.FunctionalPass):
    """The ``openvino_int8`` pass: NNCF INT8 quantization of an ``ir.Model`` (see module docstring)."""

    def __init__(
        self,
        *,
        calibration_data: Any = None,
        labels: np.ndarray | None = None,
        budget_points: float | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.calibration_data = calibration_data
        self.labels = labels
        self.budget_points = budget_points
        self.options = dict(options or {})
        unknown = sorted(set(self.options) - set(_OPTIONS))
        if unknown:
            raise OptimizationError(f"openvino_int8 does not know option(s) {unknown}; known: {list(_OPTIONS)}")

    @classmethod
    def from_config(cls, context: Any = None, **kwargs: Any) -> Int8QuantizePass:
        """Build from edgecore's PassContext (``samples``, ``options``, ``budget``) or plain kwargs."""
        samples = getattr(context, "samples", None)
        if samples is not None:
            kwargs.setdefault("calibration_data", list(samples.single_rows()))
            labels = getattr(samples, "labels", None)
            if labels is not None and getattr(context, "metric", "") == "top1_points":
                kwargs.setdefault("labels", labels)
                kwargs.setdefault("budget_points", float(context.budget))
        options = getattr(context, "options", None)
        if options:
            kwargs.setdefault("options", dict(options))
        return cls(**kwargs)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if self.calibration_data is None:
            raise OptimizationError("openvino_int8 needs calibration data (OptimizationConfig.calibration_data)")
        graph = Graph(model, source="<openvino_int8 input>")
        options = dict(self.options)
        accuracy_control = options.pop("accuracy_control", True)
        kwargs: dict[str, Any] = dict(options)
        if accuracy_control and self.labels is not None and self.budget_points is not None:
            feeds = _feeds(graph, self.calibration_data)
            labels = np.asarray(self.labels)
            if len(labels) == len(feeds):
                kwargs.update(
                    validation_fn=_top1_validation(np.asarray),
                    validation_data=[(feed, labels[i : i + 1]) for i, feed in enumerate(feeds)],
                    max_drop=self.budget_points / 100.0,
                )
            else:
                logger.info("openvino_int8: %d labels for %d feeds; no accuracy control", len(labels), len(feeds))
        quantized = quantize_int8(graph, self.calibration_data, **kwargs)
        return ir.passes.PassResult(quantized.model, modified=True)
