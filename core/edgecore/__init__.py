"""edgecore: run ONNX models fast on edge hardware, through one API over every backend plugin.

The core reads bottom-up in layers. A module may import modules of its own layer or of lower ones,
never a higher one, and no import cycle is allowed (``if TYPE_CHECKING:`` imports count too, except
in ``hookspecs``, where a hook spec names types of any layer). ``tests/test_layers.py`` reads the
table below and enforces it; docs/architecture.md explains it. A name covers its submodules; the
most specific name wins.

1. values: errors, tensor, watchdog, _lazy (exports imported on first use)
2. model and memory: graph, validation (judging a proto as runtimes do), loadcache (converted models, load memos), modelfile (external data, digests), cache (compiled artifacts), memory, inputs (feed and out checks, the one random-feed generator)
3. backend contract: backend, specs
4. observation: profiling (no runtime formats), stats, resources (metric values, process sampling)
5. batching: _policy (the policy, pure), _queue (requests, the queue), _runner (running a batch), scheduler (threads)
6. plugins: hookspecs, plugins, _default_plugin, selection (backend choice, model resolution)
7. engine: config, engine, tuned (reading what tune wrote), __init__ (this facade)
8. tools on top: optimize, zoo, bench, tune, metrics (Prometheus exposition), profiling.viewer
9. front ends: cli, testing, __main__

Layers 1-6 never import the engine: what they need from above comes through a hook (the built-in
plugins of layer 8 are named in ``plugins.DEFAULT_PLUGINS`` and loaded like entry points). Backend
plugins (cpu_simd, openvino) use layers 1-6 (the cache included).
"""

from typing import TYPE_CHECKING

from edgecore._lazy import lazy_exports
from edgecore.errors import (
    BackendExecutionError,
    BackendUnavailableError,
    ConfigurationError,
    EdgecoreError,
    EngineClosedError,
    InvalidInputError,
    MemoryBudgetExceeded,
    ModelLoadError,
    ModelNotLoadedError,
    OptimizationError,
    PluginError,
    QueueFullError,
    RequestTimeoutError,
    UnsupportedOperatorError,
)

if TYPE_CHECKING:
    from edgecore.config import EngineConfig
    from edgecore.engine import Engine
    from edgecore.graph import Graph
    from edgecore.hookspecs import hookimpl
    from edgecore.tensor import DataType, TensorSpec

__version__ = "0.1.0"

#: Names this facade exports, imported on first use: ``import edgecore`` (and ``edgecore --help``)
#: pays for numpy, onnx and onnx_ir only when a program touches what needs them.
_LAZY = {
    "Engine": "edgecore.engine",
    "EngineConfig": "edgecore.config",
    "Graph": "edgecore.graph",
    "hookimpl": "edgecore.hookspecs",
    "DataType": "edgecore.tensor",
    "TensorSpec": "edgecore.tensor",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

__all__ = [
    "Engine",
    "EngineConfig",
    "Graph",
    "DataType",
    "TensorSpec",
    "hookimpl",
    "EdgecoreError",
    "ModelLoadError",
    "InvalidInputError",
    "UnsupportedOperatorError",
    "BackendUnavailableError",
    "MemoryBudgetExceeded",
    "QueueFullError",
    "RequestTimeoutError",
    "OptimizationError",
    "PluginError",
    "EngineClosedError",
    "ConfigurationError",
    "ModelNotLoadedError",
    "BackendExecutionError",
]
