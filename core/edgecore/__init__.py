"""edgecore: run ONNX models fast on edge hardware, through one API over every backend plugin."""

from edgecore.config import EngineConfig
from edgecore.engine import Engine
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
from edgecore.graph import Graph
from edgecore.hookspecs import hookimpl
from edgecore.tensor import DataType, TensorSpec

__version__ = "0.1.0"

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
