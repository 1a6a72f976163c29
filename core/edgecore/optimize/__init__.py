"""Optimization that measures itself: passes checked on sample inputs, rolled back when they cost too much.

::

    from edgecore.optimize import OptimizationConfig, optimize

    graph, report = optimize("model.onnx", OptimizationConfig(enable_quantization=True))
    print(report)                      # one row per pass: time, sizes, errors, kept or rolled back
    graph.to_proto()                   # the optimized model

or, on an engine, ``report = engine.optimize(OptimizationConfig(...))``, which recompiles the
optimized graph on the engine's backend (the engine reaches this package only through the
``edgecore_optimize`` hook that :mod:`edgecore.optimize.plugin` implements).

Passes are checked on samples compiled by the target backend exactly as the serving engine compiles
(never through an Engine), or with ``onnx_reference=True`` by core's ``onnx.reference`` evaluator.
When the model's outputs do not respond to the samples (e.g. a detector fed noise) the report says
the check cannot judge and asks for real samples (``calibration_data``).

Passes come from the ``edgecore_passes`` hook: core registers ``graph_optimization``,
``structured_pruning``, ``unstructured_pruning`` and ``fp16`` (:mod:`edgecore.optimize.plugin`);
the cpu_simd plugin registers ``int8``. See :class:`PassManager` for how each is checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecore._lazy import lazy_exports

if TYPE_CHECKING:
    from edgecore.config import EngineConfig
    from edgecore.graph import Graph, ModelSource
    from edgecore.optimize.agreement import Agreement, Signal, compare, signal_of
    from edgecore.optimize.config import DEFAULT_KEEP_FP32_OPS, OptimizationConfig
    from edgecore.optimize.evaluation import ONNX_REFERENCE, Evaluator, SampleSet
    from edgecore.optimize.manager import PassContext, PassManager, is_quantized, select_passes
    from edgecore.optimize.report import GraphStats, OptimizationReport, PassRecord
    from edgecore.plugins import PluginManager

#: Names this package exports, imported on first use: registering the core passes (which every
#: plugin manager does) must not pay for onnx, onnx_ir and the pass manager.
_LAZY = {
    **dict.fromkeys(("Agreement", "Signal", "compare", "signal_of"), "edgecore.optimize.agreement"),
    **dict.fromkeys(("DEFAULT_KEEP_FP32_OPS", "OptimizationConfig"), "edgecore.optimize.config"),
    **dict.fromkeys(("ONNX_REFERENCE", "Evaluator", "SampleSet"), "edgecore.optimize.evaluation"),
    **dict.fromkeys(("PassContext", "PassManager", "is_quantized", "select_passes"), "edgecore.optimize.manager"),
    **dict.fromkeys(("GraphStats", "OptimizationReport", "PassRecord"), "edgecore.optimize.report"),
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

__all__ = [
    "OptimizationConfig",
    "OptimizationReport",
    "PassRecord",
    "GraphStats",
    "PassManager",
    "PassContext",
    "Agreement",
    "Signal",
    "ONNX_REFERENCE",
    "SampleSet",
    "Evaluator",
    "DEFAULT_KEEP_FP32_OPS",
    "compare",
    "signal_of",
    "is_quantized",
    "select_passes",
    "optimize",
]


def optimize(
    model: ModelSource,
    config: OptimizationConfig | None = None,
    *,
    backend: str = "auto",
    engine_config: EngineConfig | None = None,
    plugin_manager: PluginManager | None = None,
    onnx_reference: bool = False,
) -> tuple[Graph, OptimizationReport]:
    """Optimize ``model`` (path, bytes, ModelProto, Graph or ``"zoo:NAME"``) for ``backend``.

    Returns the optimized :class:`~edgecore.graph.Graph` and the :class:`OptimizationReport`.
    ``plugin_manager`` resolves ``zoo:`` names, picks the backend and supplies the passes (default:
    the process-wide one). ``onnx_reference=True`` checks passes with core's ``onnx.reference``
    evaluator instead of a backend plugin (``backend="reference"`` is the backend plugin of that name).
    """
    from edgecore.optimize.manager import PassManager
    from edgecore.selection import load_graph

    manager = PassManager(config, backend=backend, engine_config=engine_config, plugin_manager=plugin_manager,
                          onnx_reference=onnx_reference)
    return manager.run(load_graph(model, plugin_manager))
