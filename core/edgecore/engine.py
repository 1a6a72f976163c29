"""The Engine: load a model, pick and compile a backend, run requests, report statistics.

Concurrency: ``load``/``close`` are not meant to race with each other; ``run`` may be called from any
number of threads at once once the engine is loaded (the compiled model is thread-safe, statistics
take a short lock).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Mapping

from edgecore.backend import Backend, CompiledModel, backend_for
from edgecore.config import EngineConfig
from edgecore.errors import BackendUnavailableError, EngineClosedError, UnsupportedOperatorError
from edgecore.graph import Graph, ModelSource, describe_source
from edgecore.inputs import FeedChecker
from edgecore.memory import MemoryPool
from edgecore.stats import EngineStats, StatsRecorder

if TYPE_CHECKING:
    import numpy as np

    from edgecore.optimize import OptimizationConfig, OptimizationReport
    from edgecore.plugins import PluginManager
    from edgecore.specs import BackendSpec
    from edgecore.tensor import TensorSpec

logger = logging.getLogger(__name__)

__all__ = ["Engine"]


class Engine:
    """One model on one backend.

    >>> with Engine(EngineConfig(num_threads=2)).load("model.onnx") as engine:
    ...     outputs = engine.run({"input": x})
    """

    def __init__(self, config: EngineConfig | None = None, *, plugin_manager: PluginManager | None = None) -> None:
        self.config = config or EngineConfig()
        if plugin_manager is None:
            from edgecore.plugins import get_plugin_manager

            plugin_manager = get_plugin_manager()
        self._pm = plugin_manager
        self.pool: MemoryPool | None = (
            MemoryPool(
                alignment=self.config.memory_alignment,
                max_memory_usage=self.config.max_memory_usage,
                pool_size=self.config.pool_size,
            )
            if self.config.enable_memory_pool
            else None
        )
        self.graph: Graph | None = None
        self.backend_spec: BackendSpec | None = None
        self._compiled: CompiledModel | None = None
        self._check: FeedChecker | None = None
        self._stats = StatsRecorder()
        self._closed = False

    # -- life --------------------------------------------------------------------------------------

    def load(self, source: ModelSource) -> Engine:
        """Load, validate and compile a model (path, bytes, ModelProto, Graph or ``"zoo:NAME"``)."""
        if self._closed:
            raise EngineClosedError("this engine is closed; create a new Engine")
        graph = Graph.load(source)
        spec = self._select_backend(graph)
        backend = backend_for(spec)
        started = time.perf_counter()
        compiled = backend.compile(graph, self.config.compile_options(memory_pool=self.pool))
        logger.info(
            "compiled %s on %s in %.1f ms", describe_source(source), spec.name, (time.perf_counter() - started) * 1e3
        )
        if self._compiled is not None:
            self._compiled.close()
        self.graph, self.backend_spec, self._compiled = graph, spec, compiled
        self._check = FeedChecker(compiled.inputs)
        self._pm.hook.edgecore_engine_started(engine=self)
        return self

    def optimize(self, config: OptimizationConfig | None = None) -> OptimizationReport:
        """Optimize the loaded model with checked passes and recompile it on the same backend.

        Each pass is run on sample inputs against the graph before it and rolled back when it breaks
        ``config.accuracy_budget``; the returned report says what was kept and why. The engine then
        serves the optimized graph (``engine.graph``). Do not call it while requests are running.
        """
        from edgecore.optimize import OptimizationConfig, PassManager

        if self.graph is None or self._compiled is None:
            self._not_ready()
        manager = PassManager(
            config or OptimizationConfig(), backend=self.backend, engine_config=self.config, plugin_manager=self._pm
        )
        graph, report = manager.run(self.graph)
        if graph is not self.graph:
            compiled = backend_for(self.backend_spec).compile(graph, self.config.compile_options(memory_pool=self.pool))
            previous, self.graph, self._compiled = self._compiled, graph, compiled
            self._check = FeedChecker(compiled.inputs)
            previous.close()
        return report

    def close(self) -> None:
        """Release the compiled model; further calls raise :class:`EngineClosedError`."""
        if self._closed:
            return
        self._closed = True
        if self._compiled is not None:
            self._compiled.close()
            self._pm.hook.edgecore_engine_closed(engine=self)
        self._compiled = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------------------------

    def run(self, feeds: Mapping[str, Any], *, out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run one request in the caller's thread; return the outputs by name (the caller's to keep).

        ``feeds`` maps input names to numpy arrays or DLPack tensors; they are checked against the
        model's inputs and a mismatch raises :class:`~edgecore.errors.InvalidInputError`. ``out``
        optionally gives buffers to write outputs into.
        """
        compiled = self._compiled
        if compiled is None:
            self._not_ready()
        arrays = self._check(feeds)
        started = time.perf_counter_ns()
        try:
            result = compiled.run(arrays, out)
        except Exception:
            self._stats.record_failure()
            raise
        self._stats.record_direct(time.perf_counter_ns() - started)
        return result

    def _not_ready(self) -> None:
        if self._closed:
            raise EngineClosedError("this engine is closed; create a new Engine")
        raise EngineClosedError("no model loaded: call engine.load(model) first")

    # -- facts -------------------------------------------------------------------------------------

    @property
    def compiled(self) -> CompiledModel:
        if self._compiled is None:
            self._not_ready()
        return self._compiled

    @property
    def backend(self) -> str:
        return self.backend_spec.name if self.backend_spec else ""

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.compiled.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.compiled.outputs

    def stats(self) -> EngineStats:
        """Counts and latency percentiles of the requests answered so far."""
        return self._stats.snapshot()

    # -- backend choice ----------------------------------------------------------------------------

    def _select_backend(self, graph: Graph) -> BackendSpec:
        specs = self._pm.backends()
        wanted, device = self.config.backend, self.config.device
        if wanted != "auto":
            spec = specs.get(wanted)
            if spec is None:
                raise BackendUnavailableError(
                    f"no backend named {wanted!r} is installed; installed: {sorted(specs) or 'none'}"
                    f"{self._broken_plugins()}. Install its plugin (e.g. pip install edgecore-cpu-simd)"
                )
            backend = self._available(spec)
            unsupported = backend.supported_ops(graph)
            if unsupported:
                raise self._unsupported(graph, {spec.name: unsupported})
            return spec
        candidates, reasons = [], {}
        for spec in specs.values():
            if device != "auto" and device not in spec.devices:
                reasons[spec.name] = f"serves devices {list(spec.devices)}, not {device!r}"
                continue
            try:
                self._available(spec)
            except BackendUnavailableError as exc:
                reasons[spec.name] = str(exc)
                continue
            candidates.append(spec)
        if not candidates:
            detail = "; ".join(f"{name}: {why}" for name, why in reasons.items()) or "no backend plugin is installed"
            raise BackendUnavailableError(
                f"no backend can run on device {device!r} here ({detail}){self._broken_plugins()}. "
                f"Install a backend plugin, e.g. pip install edgecore-cpu-simd"
            )
        chosen = self._pm.hook.edgecore_select_backend(graph=graph, candidates=candidates, config=self.config)
        if chosen is None:
            raise self._unsupported(graph, {s.name: backend_for(s).supported_ops(graph) for s in candidates})
        return chosen

    def _available(self, spec: BackendSpec) -> Backend:
        try:
            backend = backend_for(spec)
            availability = backend.availability()
        except Exception as exc:
            raise BackendUnavailableError(f"backend {spec.name!r} failed to initialize: {exc!r}") from exc
        if not availability.ok:
            raise BackendUnavailableError(f"backend {spec.name!r} is unavailable: {availability.reason}")
        return backend

    def _unsupported(self, graph: Graph, missing: dict[str, list[str]]) -> UnsupportedOperatorError:
        ops = sorted({op for names in missing.values() for op in names})
        have = {}
        for spec in self._pm.backends().values():
            try:
                lacking = set(backend_for(spec).supported_ops(graph))
            except Exception:
                continue
            have[spec.name] = [op for op in ops if op not in lacking]
        detail = "; ".join(f"{name} lacks {names}" for name, names in missing.items())
        return UnsupportedOperatorError(
            f"{graph.name}: no selected backend runs every operator ({detail}); backends that have "
            f"them: { {k: v for k, v in have.items() if v} or 'none' }",
            ops=tuple(ops),
            available=have,
        )

    def _broken_plugins(self) -> str:
        if not self._pm.failures:
            return ""
        return "; plugins that failed to load: " + ", ".join(f"{f.name} ({f.error})" for f in self._pm.failures)

    def __repr__(self) -> str:
        state = "closed" if self._closed else (f"{self.graph.name} on {self.backend}" if self.graph else "empty")
        return f"<Engine {state}>"


