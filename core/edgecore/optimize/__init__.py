"""Optimization that measures itself: passes checked on sample inputs, rolled back when they cost too much.

::

    from edgecore.optimize import OptimizationConfig, optimize

    graph, report = optimize("model.onnx", OptimizationConfig(enable_quantization=True))
    print(report)                      # one row per pass: time, sizes, errors, kept or rolled back
    graph.to_proto()                   # the optimized model

or, on an engine, ``report = engine.optimize(OptimizationConfig(...))``, which recompiles the
optimized graph on the engine's backend.

Passes come from the ``edgecore_passes`` hook: core registers ``graph_optimization``,
``structured_pruning``, ``unstructured_pruning`` and ``fp16`` (:mod:`edgecore.optimize.plugin`);
the cpu_simd plugin registers ``int8``. See :class:`PassManager` for how each is checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecore.selection import load_graph
from edgecore.optimize.agreement import Agreement, compare
from edgecore.optimize.config import DEFAULT_KEEP_FP32_OPS, OptimizationConfig
from edgecore.optimize.evaluation import Evaluator, SampleSet
from edgecore.optimize.manager import PassContext, PassManager, is_quantized, select_passes
from edgecore.optimize.report import GraphStats, OptimizationReport, PassRecord

if TYPE_CHECKING:
    from edgecore.config import EngineConfig
    from edgecore.graph import Graph, ModelSource
    from edgecore.plugins import PluginManager

__all__ = [
    "OptimizationConfig",
    "OptimizationReport",
    "PassRecord",
    "GraphStats",
    "PassManager",
    "PassContext",
    "Agreement",
    "SampleSet",
    "Evaluator",
    "DEFAULT_KEEP_FP32_OPS",
    "compare",
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
) -> tuple[Graph, OptimizationReport]:
    """Optimize ``model`` (path, bytes, ModelProto, Graph or ``"zoo:NAME"``) for ``backend``.

    Returns the optimized :class:`~edgecore.graph.Graph` and the :class:`OptimizationReport`.
    ``backend="reference"`` checks passes with ``onnx.reference`` instead of a backend plugin.
    """
    from edgecore.graph import Graph

    manager = PassManager(config, backend=backend, engine_config=engine_config, plugin_manager=plugin_manager)
    return manager.run(load_graph(model, plugin_manager))
