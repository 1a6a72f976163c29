"""Core's optimization passes, registered through ``edgecore_passes`` like any plugin's, and
core's optimizer behind ``Engine.optimize`` (``edgecore_optimize``, ``trylast``).

Each factory takes the :class:`~edgecore.optimize.manager.PassContext` (config, samples, the
pass's ``custom_options``) and returns an ``onnx_ir`` pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecore.hookspecs import hookimpl
from edgecore.specs import PassSpec

if TYPE_CHECKING:
    import onnx_ir as ir

    from edgecore.config import EngineConfig
    from edgecore.graph import Graph
    from edgecore.optimize.config import OptimizationConfig
    from edgecore.optimize.manager import PassContext
    from edgecore.optimize.report import OptimizationReport
    from edgecore.plugins import PluginManager

__all__ = ["edgecore_optimize", "edgecore_passes"]


@hookimpl(trylast=True)
def edgecore_optimize(
    graph: Graph,
    config: OptimizationConfig | None,
    backend: str,
    engine_config: EngineConfig,
    plugin_manager: PluginManager,
) -> tuple[Graph, OptimizationReport]:
    """The :class:`~edgecore.optimize.manager.PassManager` on ``backend`` with the engine's settings."""
    from edgecore.optimize.manager import PassManager

    manager = PassManager(config, backend=backend, engine_config=engine_config, plugin_manager=plugin_manager)
    return manager.run(graph)


def _graph_optimization(context: PassContext) -> ir.passes.PassBase:
    from edgecore.optimize.graph_passes import GraphOptimizationPass

    options = dict(context.options)
    iterations = int(options.pop("iterations", 2))
    if options:
        from edgecore.errors import OptimizationError

        raise OptimizationError(
            f"pass 'graph_optimization' does not know option(s) {sorted(options)}; known: ['iterations']"
        )
    return GraphOptimizationPass(iterations=iterations)


def _structured(context: PassContext) -> ir.passes.PassBase:
    from edgecore.optimize.pruning import StructuredPruningPass

    return StructuredPruningPass(context.config.pruning_ratio, options=context.options, context=context)


def _unstructured(context: PassContext) -> ir.passes.PassBase:
    from edgecore.optimize.pruning import UnstructuredPruningPass

    return UnstructuredPruningPass(context.config.pruning_ratio, options=context.options, context=context)


def _fp16(context: PassContext) -> ir.passes.PassBase:
    from edgecore.optimize.precision import Fp16Pass

    return Fp16Pass(context, keep_ops=context.config.keep_fp32_ops, options=context.options)


@hookimpl
def edgecore_passes() -> list[PassSpec]:
    """Graph optimization (exact), structured and unstructured pruning, float16 mixed precision."""
    return [
        PassSpec(
            name="graph_optimization",
            factory=_graph_optimization,
            stage="graph",
            exact=True,
            description="constant folding, dead code, identities, CSE, BatchNorm/affine folding into "
            "Conv/Gemm, Transpose/Reshape cancelling (onnxscript optimizer + edgecore rewrites)",
        ),
        PassSpec(
            name="structured_pruning",
            factory=_structured,
            stage="prune",
            description="remove the lowest-L1 output channels of Conv/Gemm/MatMul and the matching inputs "
            "downstream (residual groups left whole or pruned together)",
        ),
        PassSpec(
            name="unstructured_pruning",
            factory=_unstructured,
            stage="prune",
            description="zero the smallest-magnitude weights of each Conv/Gemm/MatMul",
        ),
        PassSpec(
            name="fp16",
            factory=_fp16,
            stage="precision",
            description="float16 weights and compute, keep-fp32 op list, sensitivity-guided fallback",
        ),
    ]
