"""The contract between core and the backends that plugins bring.

A plugin registers a :class:`~edgecore.specs.BackendSpec` whose factory builds a :class:`Backend`.
The backend says whether it can run here (:meth:`Backend.availability`), on which devices, which
operators of a graph it cannot run, and compiles a :class:`~edgecore.graph.Graph` into a
:class:`CompiledModel` that runs requests.

Public validates, protected implements (as ``onnx.reference``'s ``run``/``_run``):
:meth:`CompiledModel.run` checks the feeds against :attr:`CompiledModel.inputs` (names, dtypes,
ranks, fixed dimensions) and the ``out`` buffers against :attr:`CompiledModel.outputs`, once, in
core; a backend implements :meth:`CompiledModel._run`, which receives checked numpy arrays. Whatever
a backend's ``_run`` raises that is not an :class:`~edgecore.errors.EdgecoreError` reaches the
caller as :class:`~edgecore.errors.BackendExecutionError` naming the backend, with the runtime's
exception as ``__cause__``.
"""

from __future__ import annotations

import abc
import functools
import threading
import time
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

import attrs
import numpy as np

from edgecore.errors import BackendExecutionError, ConfigurationError, EdgecoreError
from edgecore.inputs import FeedChecker, check_out
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
    "deadline_after",
    "check_options",
    "GRAPH_OPTIMIZATION_LEVELS",
    "MEMORY_MODES",
]

GRAPH_OPTIMIZATION_LEVELS = ("disabled", "basic", "extended", "all")
MEMORY_MODES = ("balanced", "min")


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
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
        raise ConfigurationError(f"{attribute.name} must be one of {GRAPH_OPTIMIZATION_LEVELS}, got {value!r}")


def _memory_mode(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if value not in MEMORY_MODES:
        raise ConfigurationError(f"{attribute.name} must be one of {MEMORY_MODES}, got {value!r}")


def _folder(value: Any) -> Path | None:
    return Path(value).expanduser() if value else None


def _non_negative(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if value < 0:
        raise ConfigurationError(f"{attribute.name} must be >= 0 (0 = the runtime's default), got {value}")


@attrs.frozen(kw_only=True)
class CompileOptions:
    """What the engine asks of a backend when it compiles a graph.

    ``num_threads``/``inter_op_threads``: 0 lets the runtime choose. ``graph_optimization_level`` is
    the runtime's own optimizer level. ``options`` carries backend-specific settings (the seed's
    ``custom_options``); a backend rejects keys it does not know with a clear error.

    ``cache_dir``: the folder of edgecore's caches (None: ``$EDGECORE_CACHE_DIR``, else
    ``~/.cache/edgecore``); a backend keeps its compiled artifacts in the :mod:`edgecore.cache`
    under ``cache_dir / "artifacts"`` (or its own runtime's cache in a folder of its own under
    ``cache_dir``), capped at ``cache_max_bytes`` (0 = no cap). ``memory_mode``: "balanced"
    (the runtime's defaults: pre-packed weights, arenas) or "min" (what costs memory to gain speed
    is turned off where the runtime allows it).
    """

    device: str = "auto"
    num_threads: int = attrs.field(default=0, validator=_non_negative)
    inter_op_threads: int = attrs.field(default=0, validator=_non_negative)
    graph_optimization_level: str = attrs.field(default="all", validator=_level)
    enable_hardware_acceleration: bool = True
    precision: str | None = None
    profile_ops: bool = False
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    shared_cores: bool = False
    cache_dir: Path | None = attrs.field(default=None, converter=_folder)
    cache_max_bytes: int = attrs.field(default=4 << 30, validator=_non_negative)
    memory_mode: str = attrs.field(default="balanced", validator=_memory_mode)
    memory_pool: MemoryPool | None = attrs.field(default=None, eq=False)

    #: EngineConfig fields read under another name here (the seed's names on the config side).
    RENAMED = {"custom_options": "options"}

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> CompileOptions:
        """The options an ``EngineConfig`` (or any object with the same field names) asks for."""
        values = {}
        for field in attrs.fields(cls):
            source = next((k for k, v in cls.RENAMED.items() if v == field.name), field.name)
            if field.name not in overrides and hasattr(config, source):
                values[field.name] = getattr(config, source)
        values.update(overrides)
        return cls(**values)

    def artifact_cache(self) -> Any:
        """The :class:`edgecore.cache.ArtifactCache` these options name."""
        from edgecore.cache import ArtifactCache, default_cache_dir

        root = self.cache_dir / "artifacts" if self.cache_dir is not None else default_cache_dir()
        return ArtifactCache(root, max_bytes=self.cache_max_bytes)


class CompiledModel(abc.ABC):
    """A graph compiled for one backend and device, ready to run requests from many threads.

    Subclasses set :attr:`backend`, :attr:`inputs` and :attr:`outputs` and implement :meth:`_run`.
    """

    backend: str = ""
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()

    def run(
        self,
        feeds: Mapping[str, Any],
        out: Mapping[str, np.ndarray] | None = None,
        *,
        timeout_ms: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run one request; return every output by name (the caller's to keep).

        ``feeds`` maps input names to numpy arrays or DLPack host tensors; ``out`` optionally gives
        buffers to write outputs into (writeable, C-contiguous, the output's dtype and shape).
        ``timeout_ms`` stops a backend that can cancel its runtime's run (none: no deadline).
        Raises :class:`~edgecore.errors.InvalidInputError` for feeds or buffers that do not fit,
        :class:`~edgecore.errors.RequestTimeoutError` past the deadline and
        :class:`~edgecore.errors.BackendExecutionError` when the runtime fails.
        """
        arrays = self.check(feeds)
        if out is not None:
            out = check_out(out, self.outputs)
        return self.execute(arrays, out, deadline_after(timeout_ms))

    def check(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """``feeds`` as numpy arrays checked against :attr:`inputs` (raises InvalidInputError)."""
        return self._checker(feeds)

    @functools.cached_property
    def _checker(self) -> FeedChecker:
        return FeedChecker(self.inputs)

    def execute(
        self, feeds: dict[str, np.ndarray], out: Mapping[str, np.ndarray] | None = None, deadline_ns: int = 0
    ) -> dict[str, np.ndarray]:
        """:meth:`_run` on feeds (and ``out``) already checked; runtime failures become
        :class:`~edgecore.errors.BackendExecutionError`. For the engine and the scheduler."""
        try:
            return self._run(feeds, out, deadline_ns)
        except EdgecoreError:
            raise
        except Exception as exc:
            raise BackendExecutionError(
                f"backend {self.backend!r} failed to run the model: {type(exc).__name__}: {exc}",
                backend=self.backend,
            ) from exc

    @abc.abstractmethod
    def _run(
        self, feeds: dict[str, np.ndarray], out: Mapping[str, np.ndarray] | None, deadline_ns: int
    ) -> dict[str, np.ndarray]:
        """Run checked ``feeds``; fill ``out`` (checked: names, dtypes, layout) when given.

        ``deadline_ns`` is a :func:`time.perf_counter_ns` instant (0 = none): a backend whose runtime
        can stop a run stops it then and raises :class:`~edgecore.errors.RequestTimeoutError`
        (see :func:`edgecore.watchdog.watch`); one that cannot, runs to the end. An output buffer
        whose shape does not fit the result raises :class:`~edgecore.errors.InvalidInputError`.
        Returns every output by name; returned arrays belong to the caller.
        """

    def memory_bytes(self) -> int:
        """Bytes this compiled model holds (weights, workspace, buffers), 0 if unknown."""
        return 0

    def close(self) -> None:
        """Release runtime resources; ``run`` must not be called afterwards."""


def deadline_after(timeout_ms: float | None) -> int:
    """The :func:`time.perf_counter_ns` instant ``timeout_ms`` from now (0 for None or 0: none)."""
    if not timeout_ms:
        return 0
    if timeout_ms < 0:
        raise ConfigurationError(f"timeout_ms must be >= 0 (0 or None = no timeout), got {timeout_ms!r}")
    return time.perf_counter_ns() + int(timeout_ms * 1e6)


class Backend(abc.ABC):
    """A runtime that compiles graphs for some devices."""

    name: str = ""

    @abc.abstractmethod
    def availability(self) -> Availability:
        """Whether this backend can run here, and if not, why (never raises)."""

    def devices(self) -> list[DeviceInfo]:
        """Devices this backend can run on here."""
        return []

    def unsupported_ops(self, graph: Graph) -> list[str]:
        """Operators of ``graph`` this backend cannot run (``domain::Op`` for non-default domains);
        empty when it runs them all."""
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


def check_options(backend: str, given: Mapping[str, Any], known: Mapping[str, str]) -> None:
    """Raise :class:`ConfigurationError` naming every key of ``given`` (a backend's custom options)
    that is not in ``known`` (option -> what it does), and listing the known ones."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigurationError(
            f"{backend} does not know option(s) {unknown}; known: " + "; ".join(f"{k}: {v}" for k, v in known.items())
        )
