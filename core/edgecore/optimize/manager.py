"""The PassManager: runs passes one by one, checks each on sample inputs, keeps or rolls it back.

For every pass the manager copies the current graph, lets the pass change the copy, runs the result
on the samples (through the target backend, or ``onnx.reference``) and compares it with the graph
before the pass and with the original:

- an *exact* pass (``PassSpec.exact``: graph optimization) must stay within float rounding of the
  graph before it (``OptimizationConfig.exact_tolerance``, relative to the output's range);
- a lossy pass must keep the loss against the *original* graph within the budget (top-1 points
  when labels are given, else ``1 - cosine``).

A pass that breaks its limit, raises, changes the model's inputs or outputs, or yields a graph the
backend cannot run is rolled back (the graph stays as it was) and reported with the reason.

The checks judge only what the reference outputs let them judge (:func:`~edgecore.optimize.agreement.signal_of`):
outputs that are nearly the same for every sample are left out of the comparisons, and when no
output responds to the samples (a detector fed noise) the report says the check cannot judge and
asks for real samples; lossy passes are then skipped and exact ones kept only as exact on these
samples, flagged ``judged=False``.

Passes are ``onnx_ir`` passes built by ``PassSpec.factory(context)``; the :class:`PassContext` gives
them the config, the samples, and :meth:`PassContext.measure` for passes that search for the most
they can do within the budget (int8 and fp16 fallback).

Concurrency: a PassManager run belongs to the calling thread.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import onnx_ir as ir

from edgecore.errors import EdgecoreError, OptimizationError
from edgecore.graph import Graph
from edgecore.optimize.agreement import Agreement, Signal, compare, signal_of
from edgecore.optimize.config import STAGES, OptimizationConfig
from edgecore.optimize.evaluation import ONNX_REFERENCE, Evaluator, SampleSet
from edgecore.optimize.report import (
    FAILED,
    KEPT,
    ROLLED_BACK,
    SKIPPED,
    UNCHANGED,
    GraphStats,
    OptimizationReport,
    PassRecord,
)
from edgecore.profiling.profiler import get_profiler
from edgecore.specs import PassSpec

if TYPE_CHECKING:
    from edgecore.config import EngineConfig
    from edgecore.plugins import PluginManager

logger = logging.getLogger(__name__)

__all__ = ["PassContext", "PassManager", "select_passes", "is_quantized"]

TOP1 = "top1_points"
COSINE = "cosine_loss"

_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
              "MatMulInteger", "ConvInteger"}


def is_quantized(model: ir.Model | Graph) -> bool:
    """Whether the graph holds quantization operators (QDQ or integer kernels)."""
    graph = model.model.graph if isinstance(model, Graph) else model.graph
    return any(node.op_type in _QUANT_OPS for node in ir.traversal.RecursiveGraphIterator(graph))


class PassContext:
    """What a pass may use: config, samples, the backend's name, and loss measurement.

    ``measure(model)`` runs a candidate ``ir.Model`` on the samples and returns its loss against the
    original graph in the budget's metric; ``within_budget(loss)`` compares it with the budget.
    ``note(text)`` and ``detail(key, value)`` add to the pass's record in the report.
    """

    def __init__(
        self,
        *,
        config: OptimizationConfig,
        samples: SampleSet,
        evaluator: Evaluator,
        reference: list[np.ndarray],
        original_accuracy: float | None,
        spec: PassSpec,
        judged: Sequence[int] | None = None,
    ) -> None:
        self.config = config
        self.samples = samples
        self.spec = spec
        self._judged = tuple(judged) if judged is not None else None
        self.options = config.options_for(spec.name)
        self._evaluator = evaluator
        self._reference = reference
        self._original_accuracy = original_accuracy
        self.notes: list[str] = []
        self.details: dict[str, Any] = {}
        self.measurements = 0

    @property
    def backend(self) -> str:
        """The backend the graph is optimized for (resolved from ``auto``)."""
        return self._evaluator.backend

    @property
    def budget(self) -> float:
        return self.config.budget()

    @property
    def metric(self) -> str:
        return TOP1 if self.samples.labels is not None else COSINE

    def loss_of(self, agreement: Agreement) -> float:
        """The budgeted loss of an agreement with the original outputs."""
        if self.samples.labels is not None and agreement.accuracy is not None and self._original_accuracy is not None:
            return self._original_accuracy - agreement.accuracy
        return agreement.cosine_loss

    def agreement(self, model: ir.Model | Graph) -> Agreement:
        graph = model if isinstance(model, Graph) else Graph(model, source="<candidate>")
        self.measurements += 1
        outputs = self._evaluator.outputs(graph)
        return self.compare(self._reference, outputs)

    def compare(self, reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> Agreement:
        """:func:`compare` on the outputs that carry signal on these samples (all, if every one does)."""
        return _compare(reference, outputs, self.samples.labels, self._judged)

    def measure(self, model: ir.Model | Graph) -> float:
        """Loss of ``model`` against the original graph on the samples (runs it on the backend)."""
        return self.loss_of(self.agreement(model))

    def run(self, model: ir.Model | Graph, *, rows: int | None = None) -> dict[str, np.ndarray]:
        """Every output of ``model`` by name, on the samples (the first ``rows`` of them if given)."""
        graph = model if isinstance(model, Graph) else Graph(model, source="<probe>")
        evaluator = self._evaluator if rows is None else self._evaluator.with_samples(self.samples.head(rows))
        return dict(zip((s.name for s in graph.outputs), evaluator.outputs(graph)))

    def within_budget(self, loss: float) -> bool:
        return bool(loss <= self.budget)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def detail(self, key: str, value: Any) -> None:
        self.details[key] = value


def _compare(
    reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray], labels: np.ndarray | None,
    judged: Sequence[int] | None,
) -> Agreement:
    if judged is None or len(judged) == len(reference):
        return compare(reference, outputs, labels)
    return compare([reference[i] for i in judged], [outputs[i] for i in judged], labels)


def _calib_hint(samples: SampleSet) -> str:
    if samples.generated:
        return ("give real samples: OptimizationConfig(calibration_data=...), or edgecore optimize --calib FILE.npz "
                "(one array per input name, samples along axis 0)")
    return "even the given calibration samples do not exercise them: give samples on which the model answers"


def _serves(spec: PassSpec, backend: str) -> bool:
    return not spec.backends or backend in spec.backends


def select_passes(config: OptimizationConfig, registry: dict[str, PassSpec], backend: str) -> list[PassSpec]:
    """The passes a config asks for, in stage order (or ``config.passes`` in the given order)."""
    available = ", ".join(f"{n} ({s.stage})" for n, s in sorted(registry.items())) or "none"

    def named(name: str, stage: str | None, why: str) -> PassSpec:
        spec = registry.get(name)
        if spec is None or (stage is not None and spec.stage != stage):
            hint = " (pip install edgecore-cpu-simd brings 'int8')" if name == "int8" else ""
            raise OptimizationError(
                f"{why} asks for pass {name!r}, which is not registered{hint}; available: {available}"
            )
        return spec

    if config.passes:
        return [named(name, None, "OptimizationConfig.passes") for name in config.passes]
    chosen: list[PassSpec] = []
    for stage in STAGES:
        if stage == "graph" and config.enable_graph_optimization:
            chosen.extend(s for s in registry.values() if s.stage == "graph" and _serves(s, backend))
        elif stage == "prune" and config.enable_pruning:
            chosen.append(named(f"{config.pruning_mode}_pruning", "prune", f"pruning_mode={config.pruning_mode!r}"))
        elif stage == "quantize" and config.enable_quantization:
            own = [s for s in registry.values() if s.stage == "quantize" and backend in s.backends]
            if config.quantization_type == "int8" and own:  # the backend's own int8 pass, if it has one
                chosen.append(own[0])
            else:
                why = f"quantization_type={config.quantization_type!r}"
                chosen.append(named(config.quantization_type, "quantize", why))
        elif stage == "precision" and config.enable_mixed_precision:
            chosen.append(
                named(config.mixed_precision_type, "precision", f"mixed_precision_type={config.mixed_precision_type!r}")
            )
    return chosen


class PassManager:
    """Runs passes on a graph, each checked on sample inputs and rolled back when it breaks its limit.

    >>> manager = PassManager(OptimizationConfig(enable_quantization=True), backend="cpu_simd")
    >>> graph, report = manager.run(Graph.load("model.onnx"))
    >>> print(report)

    ``passes``: the :class:`PassSpec` list to run (default: chosen from the config among the
    passes registered through ``edgecore_passes``). ``backend``: which backend checks the passes
    and which backend-specific passes apply (``"auto"`` or a backend name). ``engine_config``: the
    settings the backend compiles with, as the serving engine's. ``onnx_reference=True`` checks the
    passes with core's ``onnx.reference`` evaluator instead of a backend (the report says
    ``onnx.reference``); backend-specific passes then apply only if ``backend`` names one.
    """

    def __init__(
        self,
        config: OptimizationConfig | None = None,
        *,
        passes: Sequence[PassSpec] | None = None,
        backend: str = "auto",
        engine_config: EngineConfig | None = None,
        plugin_manager: PluginManager | None = None,
        onnx_reference: bool = False,
    ) -> None:
        self.config = config or OptimizationConfig()
        self.onnx_reference = onnx_reference
        self._passes = list(passes) if passes is not None else None
        self.backend = engine_config.backend if engine_config is not None and backend == "auto" else backend
        self._engine_config = engine_config
        self._pm = plugin_manager

    def _plugin_manager(self) -> PluginManager:
        if self._pm is None:
            from edgecore.plugins import get_plugin_manager

            self._pm = get_plugin_manager()
        return self._pm

    def run(self, graph: Graph) -> tuple[Graph, OptimizationReport]:
        """Optimize ``graph``; return the optimized graph and the report. The input is not changed."""
        started = time.perf_counter()
        config = self.config
        samples = SampleSet.from_config(config, graph.inputs)
        evaluator = Evaluator(
            samples, backend=self.backend, engine_config=self._engine_config, plugin_manager=self._pm,
            onnx_reference=self.onnx_reference,
        )
        try:
            reference = evaluator.outputs(graph)
        except EdgecoreError:  # unavailable backend, bad sample shapes...: already says what is wrong
            raise
        except Exception as exc:
            raise OptimizationError(f"{graph.name}: the unoptimized graph does not run on the samples: {exc}") from exc
        backend = evaluator.backend
        signal = signal_of(reference, [s.name for s in graph.outputs])
        judged = signal.judged if signal.can_judge else None
        if signal.flat:
            logger.warning("%s: %s; %s", graph.name, signal.reason, _calib_hint(samples))
        original_accuracy = _compare(reference, reference, samples.labels, judged).accuracy
        if samples.labels is not None and original_accuracy is None:
            raise OptimizationError(
                f"{graph.name}: labels were given, but no output looks like class scores [samples, classes]"
            )
        serves = self.backend if self.onnx_reference and self.backend != "auto" else backend
        specs = self._passes if self._passes is not None else select_passes(
            config, self._plugin_manager().passes(), serves
        )
        logger.info("optimizing %s on %s with passes %s (%s)", graph.name, backend, [s.name for s in specs],
                    samples.description)
        current, current_outputs, current_stats = graph, reference, GraphStats.of(graph)
        original_stats = current_stats
        records: list[PassRecord] = []
        profiler = get_profiler()
        for spec in specs:
            context = PassContext(
                config=config, samples=samples, evaluator=evaluator, reference=reference,
                original_accuracy=original_accuracy, spec=spec, judged=judged,
            )
            pass_started = time.perf_counter_ns()
            record, candidate, outputs = self._run_pass(spec, context, current, current_outputs, current_stats,
                                                        signal)
            if profiler.active:  # the "optimize/<pass>" trace stage: the pass and its check
                profiler.record(f"optimize/{spec.name}", pass_started, time.perf_counter_ns(), args={
                    "pass": spec.name, "stage": spec.stage, "status": record.status, "backend": backend,
                    "model": graph.name,
                })
            records.append(record)
            if record.status == KEPT:
                current, current_outputs, current_stats = candidate, outputs, record.after
        final = _compare(reference, current_outputs, samples.labels, judged) if signal.can_judge else None
        metric = TOP1 if samples.labels is not None else COSINE
        report = OptimizationReport(
            model=graph.name,
            backend=backend,
            metric=metric,
            budget=config.budget(),
            samples=samples.description,
            generated_samples=samples.generated,
            original=original_stats,
            final=current_stats,
            passes=records,
            original_accuracy=original_accuracy,
            final_agreement=final,
            final_loss=_loss(final, original_accuracy, metric) if final is not None else None,
            signal=signal,
            check_hint=_calib_hint(samples) if signal.flat else "",
            seconds=time.perf_counter() - started,
            config=config.to_json(),
        )
        return current, report

    def _run_pass(
        self, spec: PassSpec, context: PassContext, current: Graph, current_outputs: list[np.ndarray],
        before: GraphStats, signal: Signal,
    ) -> tuple[PassRecord, Graph | None, list[np.ndarray] | None]:
        judged = signal.can_judge
        base = dict(name=spec.name, stage=spec.stage, exact=spec.exact, before=before, judged=judged)

        def record(status: str, reason: str, **more: Any) -> PassRecord:
            return PassRecord(**base, status=status, reason=reason, notes=context.notes, details=context.details,
                              **more)

        if not judged and not spec.exact:
            why = ("not run: the check cannot judge a lossy pass on these samples (the reference outputs "
                   "do not respond to them; see the report's check)")
            return record(SKIPPED, why), None, None
        if spec.stage == "precision" and is_quantized(current):
            why = "the graph is already quantized; mixed precision applies to float graphs"
            return record(SKIPPED, why), None, None
        started = time.perf_counter()
        try:
            model = current.copy()
            pass_ = spec.factory(context)
            result = pass_(model)
        except Exception as exc:
            logger.warning("pass %s failed on %s: %r", spec.name, current.name, exc, exc_info=True)
            return record(FAILED, f"the pass raised {exc!r}; the graph is left as it was",
                          seconds=time.perf_counter() - started), None, None
        seconds = time.perf_counter() - started
        if not result.modified:
            return record(UNCHANGED, "nothing to change", seconds=seconds, after=before), None, None
        candidate = Graph(result.model, source=current.source)
        interface = _interface_change(current, candidate)
        if interface:
            return record(ROLLED_BACK, f"the pass changed the model's interface ({interface}); rolled back",
                          seconds=seconds), None, None
        check_started = time.perf_counter()
        try:
            after = GraphStats.of(candidate)
            outputs = context._evaluator.outputs(candidate)
        except Exception as exc:
            logger.warning("graph from pass %s does not run: %r", spec.name, exc)
            return record(FAILED, f"the optimized graph does not run on {context.backend}: {exc}; rolled back",
                          seconds=seconds, check_seconds=time.perf_counter() - check_started), None, None
        vs_previous = compare(current_outputs, outputs, context.samples.labels)  # exact: every output
        vs_original = context.compare(context._reference, outputs) if judged else None
        loss = context.loss_of(vs_original) if vs_original is not None else None
        check_seconds = time.perf_counter() - check_started
        more = dict(seconds=seconds, check_seconds=check_seconds, after=after, vs_previous=vs_previous,
                    vs_original=vs_original, loss=loss)
        tolerance = context.config.exact_tolerance
        if spec.exact:
            if vs_previous.max_rel_error <= tolerance and vs_previous.max_rel_error == vs_previous.max_rel_error:
                if not judged:
                    return record(KEPT, f"exact pass, kept unjudged: outputs within float rounding of the previous "
                                        f"graph's ({vs_previous.max_rel_error:.2g} of their range), but these samples "
                                        f"cannot judge it (the reference outputs do not respond to them; see the "
                                        f"report's check)", **more), candidate, outputs
                return record(KEPT, f"exact: outputs within float rounding ({vs_previous.max_rel_error:.2g} "
                                    f"<= {tolerance:g} of their range)", **more), candidate, outputs
            return record(ROLLED_BACK, f"an exact pass changed the outputs by {vs_previous.max_rel_error:.3g} of "
                                       f"their range, more than float rounding ({tolerance:g}); rolled back",
                          **more), None, None
        metric = "top-1 points" if context.metric == TOP1 else "1 - cosine"
        if context.within_budget(loss):
            return record(KEPT, f"loss {loss:.4g} ({metric}) within the budget {context.budget:.4g}",
                          **more), candidate, outputs
        return record(ROLLED_BACK, f"loss {loss:.4g} ({metric}) breaks the budget {context.budget:.4g}; rolled back",
                      **more), None, None


def _loss(agreement: Agreement, original_accuracy: float | None, metric: str) -> float:
    if metric == TOP1 and agreement.accuracy is not None and original_accuracy is not None:
        return original_accuracy - agreement.accuracy
    return agreement.cosine_loss


def _interface_change(before: Graph, after: Graph) -> str:
    """What changed in the inputs/outputs (names, dtypes, ranks), or ''."""
    for kind, old, new in (("inputs", before.inputs, after.inputs), ("outputs", before.outputs, after.outputs)):
        old_sig = [(s.name, s.dtype, s.rank) for s in old]
        new_sig = [(s.name, s.dtype, s.rank) for s in new]
        if old_sig != new_sig:
            return f"{kind} {old_sig} became {new_sig}"
    return ""
