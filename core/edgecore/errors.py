"""Every error edgecore raises on purpose.

Each message says what was expected, what came, and what is available, so that the caller can act on
it without reading the source. Catch :class:`EdgecoreError` to catch them all.
"""

from __future__ import annotations

__all__ = [
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


class EdgecoreError(Exception):
    """Base class of every error edgecore raises on purpose."""


class ModelLoadError(EdgecoreError):
    """The model could not be read, parsed, validated or resolved."""


class InvalidInputError(EdgecoreError, ValueError):
    """A request's inputs do not match the model: names, dtypes or shapes."""


class UnsupportedOperatorError(EdgecoreError):
    """The chosen backend cannot run some operators of the graph."""

    def __init__(self, message: str, *, ops: tuple[str, ...] = (), available: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.ops = tuple(ops)
        self.available = dict(available or {})


class BackendUnavailableError(EdgecoreError):
    """The requested backend is not installed, failed to load, or its runtime/hardware is missing."""


class MemoryBudgetExceeded(EdgecoreError, MemoryError):
    """An allocation would take the engine past ``max_memory_usage``."""


class QueueFullError(EdgecoreError):
    """The scheduler's queue holds ``max_queue_size`` requests; this one was rejected at once."""


class RequestTimeoutError(EdgecoreError, TimeoutError):
    """A request waited longer than its ``timeout_ms`` and was answered without running."""


class OptimizationError(EdgecoreError):
    """An optimization pass failed or was configured wrongly."""


class PluginError(EdgecoreError):
    """A plugin failed to load (strict mode) or registered a name that is already taken."""


class EngineClosedError(EdgecoreError):
    """The engine was closed; it accepts no more requests."""


class ConfigurationError(EdgecoreError, ValueError):
    """An option is unknown or out of range for the backend or component it was given to."""


class ModelNotLoadedError(EdgecoreError):
    """A request or query came before :meth:`Engine.load` gave the engine a model."""


class BackendExecutionError(EdgecoreError, RuntimeError):
    """The runtime under a backend failed on input the model accepts: not the caller's input.

    ``backend`` names the backend, ``distribution`` the plugin distribution that brought it (when
    known); the runtime's own exception is ``__cause__`` and its message is in this one.
    """

    def __init__(self, message: str, *, backend: str = "", distribution: str | None = None) -> None:
        super().__init__(message)
        self.backend = backend
        self.distribution = distribution
