"""The contract between core and the backends that plugins bring.

A plugin registers a :class:`~edgecore.specs.BackendSpec` whose factory builds a :class:`Backend`.
The backend says whether it can run here (:meth:`Backend.availability`), on which devices, which
operators of a graph it cannot run, and compiles a :class:`~edgecore.graph.Graph` into a
:class:`CompiledModel` that runs requests.

``CompiledModel.run`` receives feeds already checked against :attr:`CompiledModel.inputs` (names,
dtypes, ranks, fixed dimensions): backends do the work, the engine does the checking.
"""

from __future__ import annotations

import abc
import threading
from typing import TYPE_CHECKING, Any, Mapping

import attrs
import numpy as np

from edgecore.tensor import TensorSpec

if TYPE_CHECKING:
    from edgecore.graph import Graph
    from edgecore.memory import MemoryPool
    from edgecore.specs import BackendSpec

__all__ = [
    "Availability",
    "DeviceInfo",
    "CompileOptions",
    "Backend",
    "CompiledModel",
    "backend_for",
    "GRAPH_OPTIMIZATION_LEVELS",
]

GRAPH_OPTIMIZATION_LEVELS = ("disabled", "basic", "extended", "all")


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    from types import MappingProxyType

    return MappingProxyType(dict(value or {}))


@attrs.frozen(kw_only=True)
class Availability:
    """Whether a backend can run here; ``reason`` says why not, and how to fix it."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


@attrs.frozen(kw_only=True)
class DeviceInfo:
    """A device a backend can run on (``kind``: cpu, gpu or npu)."""

    name: str
    kind: str
    description: str = ""
    properties: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "description": self.description, "properties": dict(self.properties)}


def _level(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if value not in GRAPH_OPTIMIZATION_LEVELS:
        raise ValueError(f"{attribute.name} must be one of {GRAPH_OPTIMIZATION_LEVELS}, got {value!r}")


def _non_negative(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0 (0 = the runtime's default), got {value}")


@attrs.frozen(kw_only=True)
class CompileOptions:
    """What the engine asks of a backend when it compiles a graph.

    ``num_threads``/``inter_op_threads``: 0 lets the runtime choose. ``graph_optimization_level`` is
    the runtime's own optimizer level. ``options`` carries backend-specific settings (the seed's
    ``custom_options``); a backend rejects keys it does not know with a clear error.
    """

    device: str = "auto"
    num_threads: int = attrs.field(default=0, validator=_non_negative)
    inter_op_threads: int = attrs.field(default=0, validator=_non_negative)
    graph_optimization_level: str = attrs.field(default="all", validator=_level)
    enable_hardware_acceleration: bool = True
    precision: str | None = None
    profile_ops: bool = False
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    memory_pool: MemoryPool | None = attrs.field(default=None, eq=False)


class CompiledModel(abc.ABC):
    """A graph compiled for one backend and device, ready to run requests from many threads."""

    backend: str = ""
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()

    @abc.abstractmethod
    def run(
        self, feeds: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        """Run one request. ``feeds`` are checked already; ``out`` (optional) are caller buffers to fill.

        Returns every output by name; returned arrays belong to the caller.
        """

    def memory_bytes(self) -> int:
        """Bytes this compiled model holds (weights, workspace, buffers), 0 if unknown."""
        return 0

    def close(self) -> None:
        """Release runtime resources; ``run`` must not be called afterwards."""


class Backend(abc.ABC):
    """A runtime that compiles graphs for some devices."""

    name: str = ""

    @abc.abstractmethod
    def availability(self) -> Availability:
        """Whether this backend can run here, and if not, why (never raises)."""

    def devices(self) -> list[DeviceInfo]:
        """Devices this backend can run on here."""
        return []

    def supported_ops(self, graph: Graph) -> list[str]:
        """Operators of ``graph`` this backend cannot run (``domain::Op`` for non-default domains)."""
        return []

    @abc.abstractmethod
    def compile(self, graph: Graph, options: CompileOptions) -> CompiledModel:
        """Compile ``graph``; raise :class:`~edgecore.errors.EdgecoreError` subclasses on failure."""


_instances: dict[str, Backend] = {}
_instances_lock = threading.Lock()


def backend_for(spec: BackendSpec) -> Backend:
    """The one Backend instance for ``spec`` in this process (factories are called once)."""
    key = f"{spec.name}:{id(spec.factory)}"
    with _instances_lock:
        backend = _instances.get(key)
        if backend is None:
            backend = _instances[key] = spec.factory()
    return backend


def op_name(domain: str, op_type: str) -> str:
    return op_type if domain in ("", "ai.onnx") else f"{domain}::{op_type}"
