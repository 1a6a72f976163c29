"""The Engine: load a model, pick and compile a backend, run requests, report statistics.

Concurrency: ``load``/``close`` are not meant to race with each other; ``run`` may be called from any
number of threads at once once the engine is loaded (the compiled model is thread-safe, statistics
take a short lock). ``submit``/``run_async`` hand requests to the :class:`~edgecore.scheduler.Scheduler`
(started on first use, under ``_lock``), whose worker threads run them; see that module.

Profiling: while a session of the process-wide profiler records, ``run`` takes ``_run_traced``
(spans ``inference_total`` and ``backend_execute``), ``load`` records ``model_load`` and ``compile``;
with no session, ``run`` pays one attribute check. Metrics: the engine announces itself through the
``edgecore_engine_started``/``_closed`` hooks; the built-in metrics plugin exposes it to Prometheus.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Mapping

import attrs
import numpy as np

from edgecore.backend import CompiledModel, deadline_after
from edgecore.config import EngineConfig
from edgecore.errors import (
    EngineClosedError,
    ModelNotLoadedError,
    OptimizationError,
    RequestTimeoutError,
)
from edgecore.graph import Graph, ModelSource, describe_source
from edgecore.inputs import check_out, fill_out
from edgecore.memory import MemoryPool
from edgecore.resources import EngineMetrics, MetricsSample, ProcessSampler
from edgecore.profiling.profiler import get_profiler, next_batch_id, next_request_id
from edgecore.selection import candidate_backends, compile_first, compile_on, load_graph
from edgecore.stats import EngineStats, StatsRecorder

if TYPE_CHECKING:
    from concurrent.futures import Future

    from edgecore.plugins import PluginManager
    from edgecore.scheduler import Scheduler
    from edgecore.specs import BackendSpec
    from edgecore.tensor import TensorSpec

logger = logging.getLogger(__name__)

__all__ = ["Engine"]

_now = time.perf_counter_ns


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
        self._instances: tuple[CompiledModel, ...] = ()  # config.instances - 1 more, for the scheduler
        self._scheduler: Scheduler | None = None
        self._lock = threading.Lock()  # starting/stopping the scheduler
        self.backend_fallbacks: tuple[tuple[str, str], ...] = ()  # (backend, why) tried before backend_spec
        self._runtime_bytes: int | None = None  # PSS growth of the last load (see memory_held_bytes)
        self._stats = StatsRecorder()
        self._profiler = get_profiler()
        self._process: ProcessSampler | None = None  # CPU/memory readings for metrics(), from load on
        self._span_names = ("", "")  # (backend, model) for the spans of run, set by load
        self._closed = False

    @classmethod
    def from_tuned(cls, path: str | os.PathLike, *, plugin_manager: PluginManager | None = None,
                   **overrides: Any) -> Engine:
        """An engine running the configuration ``edgecore tune`` wrote to the folder ``path``, loaded
        with its chosen model; keyword ``overrides`` replace EngineConfig fields."""
        from edgecore.tuned import load_tuned

        model, config = load_tuned(path)
        engine = cls(attrs.evolve(config, **overrides) if overrides else config, plugin_manager=plugin_manager)
        try:
            return engine.load(str(model))
        except BaseException:
            engine.close()
            raise

    # -- life --------------------------------------------------------------------------------------

    def load(self, source: ModelSource) -> Engine:
        """Load, validate and compile a model (path, bytes, ModelProto, Graph or a name such as
        ``"zoo:resnet50"``, resolved through this engine's plugin manager).

        With ``backend="auto"`` a backend that fails to compile the model is logged and the next
        candidate is tried; :attr:`backend_fallbacks` says which failed and why. A
        :class:`~edgecore.errors.ConfigurationError` (the caller's settings) is raised at once.
        """
        if self._closed:
            raise EngineClosedError("this engine is closed; create a new Engine")
        held_before = _proportional_set_size()
        load_started = _now()
        graph = load_graph(source, self._pm, cache_dir=self.config.cache_dir)
        if self._profiler.active:
            self._profiler.record("model_load", load_started, _now(), args={"model": graph.name})
        started = time.perf_counter()
        candidates = candidate_backends(graph, self.config, self._pm)
        spec, (compiled, instances), failures = compile_first(candidates, lambda spec: self._compile_all(spec, graph))
        logger.info(
            "compiled %s on %s in %.1f ms", describe_source(source), spec.name, (time.perf_counter() - started) * 1e3
        )
        graph.release_serialized()  # the runtimes hold their own copy of the weights now
        self._stop_scheduler(drain=True)
        for previous in (self._compiled, *self._instances):
            if previous is not None:
                previous.close()
        self.graph, self.backend_spec, self._compiled, self._instances = graph, spec, compiled, instances
        self.backend_fallbacks = tuple(failures)
        held_after = _proportional_set_size()
        self._runtime_bytes = max(held_after - held_before, 0) if held_before and held_after else None
        budget = self.config.max_memory_usage
        if budget and self._runtime_bytes is not None and self._runtime_bytes > budget:
            logger.warning(
                "%s on %s holds %d bytes (PSS growth of loading it) beside the pool, over max_memory_usage=%d: "
                "the budget caps the pool and the runtime's working memory, not the model itself; "
                "memory_mode='min' holds less", graph.name, spec.name, self._runtime_bytes, budget,
            )
        self._span_names = (spec.name, graph.name)
        if self._process is None:
            self._process = ProcessSampler()
        self._pm.hook.edgecore_engine_started(engine=self)
        return self

    def _compile_all(self, spec: BackendSpec, graph: Graph) -> tuple[CompiledModel, tuple[CompiledModel, ...]]:
        """``config.instances`` compiled models of ``graph`` on ``spec``; none is kept if one fails."""
        options = self.config.instance_options(self.pool)
        compiled: list[CompiledModel] = []
        try:
            for instance in range(self.config.instances):
                started = _now()
                compiled.append(compile_on(spec, graph, options, self._pm))
                if self._profiler.active:
                    self._profiler.record("compile", started, _now(), args={
                        "model": graph.name, "backend": spec.name, "instance": instance,
                    })
        except BaseException:
            for model in compiled:
                _close_quietly(model)
            raise
        return compiled[0], tuple(compiled[1:])

    def optimize(self, config: Any = None) -> Any:
        """Optimize the loaded model with checked passes and recompile it on the same backend.

        ``config`` is an :class:`edgecore.optimize.OptimizationConfig` (None: the defaults); the
        result an :class:`edgecore.optimize.OptimizationReport`. Each pass is run on sample inputs
        against the graph before it and rolled back when it breaks ``config.accuracy_budget``; the
        report says what was kept and why. The engine then serves the optimized graph
        (``engine.graph``). Do not call it while requests are running. The optimizer is reached
        through the ``edgecore_optimize`` hook (core's own is :mod:`edgecore.optimize.plugin`).
        """
        if self.graph is None or self._compiled is None:
            self._not_ready()
        result = self._pm.hook.edgecore_optimize(
            graph=self.graph, config=config, backend=self.backend, engine_config=self.config, plugin_manager=self._pm
        )
        if result is None:
            raise OptimizationError(
                "no plugin implements edgecore_optimize (core's optimizer is the built-in plugin "
                "'edgecore.optimize.plugin'; this engine's plugin manager does not hold it)"
            )
        graph, report = result
        if graph is not self.graph:
            compiled, instances = self._compile_all(self.backend_spec, graph)
            self._stop_scheduler(drain=True)  # queued requests finish on the models that checked them
            previous = (self._compiled, *self._instances)
            self.graph, self._compiled, self._instances = graph, compiled, instances
            self._span_names = (self.backend, graph.name)
            for model in previous:
                model.close()
        return report

    def close(self, drain: bool = True) -> None:
        """Stop accepting requests, answer every accepted one, and release the compiled models.

        With ``drain`` (default) queued requests run before this returns; without, they fail with
        :class:`EngineClosedError`. Either way every future from :meth:`submit` is resolved. Further
        calls raise :class:`EngineClosedError`.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop_scheduler(drain=drain)
        if self._compiled is not None:
            for compiled in (self._compiled, *self._instances):
                _close_quietly(compiled)
            self._pm.hook.edgecore_engine_closed(engine=self)
        self._compiled, self._instances = None, ()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------------------------

    def run(
        self,
        feeds: Mapping[str, Any],
        *,
        out: Mapping[str, np.ndarray] | None = None,
        timeout_ms: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run one request in the caller's thread; return the outputs by name (the caller's to keep).

        ``feeds`` maps input names to numpy arrays or DLPack tensors; they are checked against the
        model's inputs and a mismatch raises :class:`~edgecore.errors.InvalidInputError`. ``out``
        optionally gives buffers to write outputs into. ``timeout_ms`` (None =
        ``config.default_timeout_ms``, 0 = none) bounds the request, execution included where the
        backend can stop its runtime: past it, :class:`~edgecore.errors.RequestTimeoutError`.
        Runtime failures raise :class:`~edgecore.errors.BackendExecutionError`.
        """
        compiled = self._compiled
        if compiled is None:
            self._not_ready()
        if self.config.enable_dynamic_batching:
            return self._run_queued(feeds, out, timeout_ms)
        if self._profiler.active:
            return self._run_traced(compiled, feeds, out, timeout_ms)
        arrays = compiled.check(feeds)
        if out is not None:
            out = check_out(out, compiled.outputs)
        deadline = deadline_after(self.config.default_timeout_ms if timeout_ms is None else timeout_ms)
        started = time.perf_counter_ns()
        try:
            result = compiled.execute(arrays, out, deadline)
        except Exception as exc:
            self._stats.record_failure("timed_out" if isinstance(exc, RequestTimeoutError) else "failed")
            raise
        self._stats.record_direct(time.perf_counter_ns() - started)
        return result

    def _run_traced(
        self,
        compiled: CompiledModel,
        feeds: Mapping[str, Any],
        out: Mapping[str, np.ndarray] | None,
        timeout_ms: float | None,
    ) -> dict[str, np.ndarray]:
        """``run`` while a profiling session records: the same work, plus ``inference_total`` (the
        whole call) and ``backend_execute`` (the compiled model's run), sharing one args dict."""
        rid = next_request_id()
        started = _now()
        backend, model = self._span_names
        args = {"batch_id": next_batch_id(), "batch_size": 1, "backend": backend, "model": model}
        executed = finished = 0
        try:
            arrays = compiled.check(feeds)
            if out is not None:
                out = check_out(out, compiled.outputs)
            deadline = deadline_after(self.config.default_timeout_ms if timeout_ms is None else timeout_ms)
            first = next(iter(arrays.values()), None)
            if first is not None and first.ndim:
                args["batch_size"] = int(first.shape[0])
            executed = _now()
            try:
                result = compiled.execute(arrays, out, deadline)
            except Exception as exc:
                self._stats.record_failure("timed_out" if isinstance(exc, RequestTimeoutError) else "failed")
                raise
            finished = _now()
            self._stats.record_direct(finished - executed)
            return result
        except BaseException as exc:
            args["error"] = type(exc).__name__
            raise
        finally:
            end = _now()
            record = self._profiler.record
            if executed:
                record("backend_execute", executed, finished or end, request_id=rid, args=args)
            record("inference_total", started, end, request_id=rid, args=args)

    def submit(self, feeds: Mapping[str, Any], *, priority: int = 0, timeout_ms: float | None = None) -> Future:
        """Queue one request for the scheduler; the future resolves to the outputs by name.

        ``priority``: 0 (served first) to ``priority_levels - 1``. ``timeout_ms`` (None =
        ``config.default_timeout_ms``, 0 = none) bounds the whole request: a request still queued at
        its deadline fails with :class:`~edgecore.errors.RequestTimeoutError` without running, and a
        running one carries the deadline into the backend, which stops its runtime then where it can
        (a batch runs until the latest deadline of its requests). Raises at once,
        accepting nothing: :class:`~edgecore.errors.InvalidInputError` for feeds that do not fit
        the model, :class:`~edgecore.errors.QueueFullError` when ``max_queue_size`` requests wait,
        :class:`EngineClosedError` once closed. Outputs are views the caller may keep; do not modify
        the fed arrays until the future resolves.
        """
        scheduler = self._scheduler or self._start_scheduler()
        return scheduler.submit(self.compiled.check(feeds), priority=priority, timeout_ms=timeout_ms)

    async def run_async(
        self, feeds: Mapping[str, Any], *, priority: int = 0, timeout_ms: float | None = None
    ) -> dict[str, np.ndarray]:
        """:meth:`submit`, awaited in the running asyncio loop (cancelling the await cancels a queued request)."""
        import asyncio

        return await asyncio.wrap_future(self.submit(feeds, priority=priority, timeout_ms=timeout_ms))

    def _run_queued(
        self, feeds: Mapping[str, Any], out: Mapping[str, np.ndarray] | None, timeout_ms: float | None
    ) -> dict[str, np.ndarray]:
        scheduler = self._scheduler or self._start_scheduler()
        compiled = self.compiled
        arrays = compiled.check(feeds)
        if out is not None:
            out = check_out(out, compiled.outputs)
        # no worker is woken: result() runs the batch in this thread when it can, else wakes one; it
        # waits in slices, checking that the request is still queued or running (never forever)
        return fill_out(scheduler.submit(arrays, timeout_ms=timeout_ms, wake=False).result(), out)

    def _start_scheduler(self) -> Scheduler:
        from edgecore.scheduler import Scheduler

        with self._lock:
            if self._scheduler is None:
                if self._closed or self._compiled is None:
                    self._not_ready()
                self._scheduler = Scheduler(
                    (self._compiled, *self._instances), self.config, stats=self._stats, pool=self.pool
                )
            return self._scheduler

    def _stop_scheduler(self, drain: bool) -> None:
        with self._lock:
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.close(drain=drain)

    def _not_ready(self) -> None:
        if self._closed:
            raise EngineClosedError("this engine is closed; create a new Engine")
        raise ModelNotLoadedError("no model loaded: call engine.load(model) first")

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
        """Counts and latency percentiles of the requests answered so far, and the scheduler's state."""
        scheduler = self._scheduler
        if scheduler is None:
            return self._stats.snapshot()
        return self._stats.snapshot(instance_utilization=scheduler.utilization(), queue_depth=scheduler.queued)

    def memory_held_bytes(self) -> int | None:
        """What this engine holds: the bytes its memory pool reserves plus what loading the model
        made the process hold (its PSS growth across load and compile: the runtime's weights,
        pre-packed copies, code and arenas; mapped weights count by their share). None where the
        system reports no PSS. The runtime part is read once, at load, as a process-wide difference:
        other threads allocating meanwhile count too, and arenas that grow later do not."""
        if self._runtime_bytes is None:
            return None
        pool = self.pool.statistics().reserved_bytes if self.pool is not None else 0
        return pool + self._runtime_bytes

    def metrics(self) -> EngineMetrics:
        """Resources now: process RSS and peak RSS, CPU utilization (psutil, since the previous
        reading), the compiled models' memory, memory-pool statistics and queue depth."""
        sampler = self._process
        if sampler is None:
            sampler = self._process = ProcessSampler()
        rss, peak = sampler.memory()
        scheduler = self._scheduler
        compiled = (self._compiled, *self._instances) if self._compiled is not None else ()
        return EngineMetrics(
            model=self.graph.name if self.graph is not None else "",
            backend=self.backend,
            memory_usage_bytes=rss,
            peak_memory_bytes=peak,
            cpu_utilization_percent=sampler.cpu_percent(),
            cpu_count=sampler.cpu_count,
            model_memory_bytes=sum(c.memory_bytes() for c in compiled),
            pool=self.pool.statistics() if self.pool is not None else None,
            queue_depth=scheduler.queued if scheduler is not None else 0,
            timestamp=time.time(),
        )

    def metrics_sample(self) -> MetricsSample:
        """What the Prometheus collector exposes for this engine (:mod:`edgecore.metrics`).

        Counters come from the same snapshot as :meth:`stats`: ``inference_count`` = items executed
        (the batch-size histogram's sum, Triton's rule), ``inference_exec_count`` =
        ``total_executions``, ``request_success`` = ``total_inferences``, ``request_failure`` =
        failed + rejected + timed out.
        """
        scheduler = self._scheduler
        stats, hist = self._stats.snapshot_with_histograms(queue_depth=scheduler.queued if scheduler is not None else 0)
        m = self.metrics()
        pool = m.pool
        return MetricsSample(
            model=m.model,
            backend=m.backend,
            inference_count=sum(size * n for size, n in stats.batch_size_histogram.items()),
            inference_exec_count=stats.total_executions,
            request_success=stats.total_inferences,
            request_failure=stats.failed_inferences + stats.rejected_requests + stats.timed_out_requests,
            request_duration_us=hist.request_duration_us,
            queue_duration_us=hist.queue_duration_us,
            compute_duration_us=hist.compute_duration_us,
            batch_size=hist.batch_size,
            memory_usage_bytes=m.memory_usage_bytes,
            peak_memory_bytes=m.peak_memory_bytes,
            cpu_utilization_percent=m.cpu_utilization_percent,
            queue_depth=stats.queue_depth,
            pool_in_use_bytes=pool.in_use_bytes if pool is not None else None,
            pool_reserved_bytes=pool.reserved_bytes if pool is not None else None,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else (f"{self.graph.name} on {self.backend}" if self.graph else "empty")
        return f"<Engine {state}>"




def _proportional_set_size() -> int:
    """This process's PSS in bytes (0 where the system has none)."""
    try:
        import psutil

        return int(getattr(psutil.Process().memory_full_info(), "pss", 0))
    except Exception:  # no psutil, no /proc, access denied
        return 0


def _close_quietly(model: CompiledModel) -> None:
    try:
        model.close()
    except Exception:  # closing must not hide the error that got us here, nor stop other closes
        logger.exception("closing a compiled model failed")
