"""The Prometheus collector over engines, the registry of live engines, and the HTTP server.

prometheus-client is an optional dependency (``edgecore[metrics]``): it is imported inside the
functions that need it, never at import time; without it they raise
:class:`~edgecore.errors.EdgecoreError` saying ``pip install 'edgecore[metrics]'``.

The registry of live engines is :func:`default_collector`: engines join it through the
``edgecore_engine_started`` hook and leave it through ``edgecore_engine_closed`` (the built-in
plugin :mod:`edgecore.metrics.plugin`); the engine itself knows nothing of this module.

Concurrency: the collector is called from the scrape thread (prometheus-client's HTTP server, or the
caller's); it holds providers under a lock and calls each provider once per scrape. A provider that
raises is logged and skipped for that scrape. ``track``/``untrack`` run in the threads that load and
close engines; they take the collector's lock (never from a weakref callback).
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Union

from edgecore.errors import EdgecoreError
from edgecore.resources import MetricsSample

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

logger = logging.getLogger(__name__)

__all__ = [
    "EngineCollector",
    "default_collector",
    "generate_latest",
    "make_registry",
    "start_http_server",
    "track",
    "untrack",
]


def _prometheus() -> Any:
    """The ``prometheus_client`` module, or an edgecore error naming the extra that brings it."""
    try:
        import prometheus_client
        import prometheus_client.core  # noqa: F401 - the metric families
    except ImportError as exc:
        raise EdgecoreError(
            f"the Prometheus exposition needs prometheus-client, which is not installed ({exc}); "
            "pip install 'edgecore[metrics]'"
        ) from exc
    return prometheus_client


Provider = Union[Callable[[], MetricsSample], Any]  # a callable, or an object with metrics_sample()

_COUNTERS = (
    ("edgecore_inference_count", "inference_count", "Inferences performed (a batch of N counts N)."),
    ("edgecore_inference_exec_count", "inference_exec_count", "Model executions (a batch counts 1)."),
    ("edgecore_inference_request_success", "request_success", "Requests answered successfully."),
    ("edgecore_inference_request_failure", "request_failure", "Requests that failed (errors, timeouts, rejections)."),
)
_HISTOGRAMS = (
    ("edgecore_request_duration_us", "request_duration_us", "End-to-end request latency in microseconds."),
    ("edgecore_queue_duration_us", "queue_duration_us", "Time requests waited in the scheduler queue, microseconds."),
    ("edgecore_compute_duration_us", "compute_duration_us", "Backend execution time per request, microseconds."),
    ("edgecore_batch_size", "batch_size", "Size of the batches executed."),
)
_GAUGES = (
    ("edgecore_memory_usage_bytes", "memory_usage_bytes", "Memory in use by the engine (bytes)."),
    ("edgecore_peak_memory_bytes", "peak_memory_bytes", "Peak memory in use by the engine (bytes)."),
    ("edgecore_cpu_utilization_percent", "cpu_utilization_percent", "CPU utilization of the process, percent."),
    ("edgecore_queue_depth", "queue_depth", "Requests waiting in the scheduler queue."),
    ("edgecore_pool_in_use_bytes", "pool_in_use_bytes", "Memory pool bytes handed out."),
    ("edgecore_pool_reserved_bytes", "pool_reserved_bytes", "Memory pool bytes reserved from the system."),
)
LABELS = ("model", "backend")


def _sample_of(provider: Provider) -> MetricsSample:
    get = getattr(provider, "metrics_sample", None)
    sample = get() if get is not None else provider()
    if not isinstance(sample, MetricsSample):
        raise TypeError(f"metrics provider {provider!r} returned {type(sample).__name__}, expected MetricsSample")
    return sample


class EngineCollector:
    """A prometheus-client custom collector over engines (or callables) producing MetricsSample.

    Objects with ``metrics_sample()`` are held weakly (a garbage-collected engine disappears from
    the exposition); plain callables are held strongly until ``remove``.
    """

    def __init__(self, providers: Iterable[Provider] = ()) -> None:
        self._lock = threading.Lock()
        self._weak: weakref.WeakSet[Any] = weakref.WeakSet()
        self._strong: list[Callable[[], MetricsSample]] = []
        for p in providers:
            self.add(p)

    def add(self, provider: Provider) -> None:
        with self._lock:
            if hasattr(provider, "metrics_sample"):
                try:
                    self._weak.add(provider)
                    return
                except TypeError:  # not weak-referenceable
                    pass
            if not callable(provider):
                raise TypeError(f"metrics provider must have metrics_sample() or be callable, got {provider!r}")
            if provider not in self._strong:
                self._strong.append(provider)

    def remove(self, provider: Provider) -> None:
        with self._lock:
            self._weak.discard(provider)
            if provider in self._strong:
                self._strong.remove(provider)

    def providers(self) -> list[Provider]:
        with self._lock:
            return list(self._weak) + list(self._strong)

    def samples(self) -> list[MetricsSample]:
        out = []
        for provider in self.providers():
            try:
                out.append(_sample_of(provider))
            except Exception:
                logger.exception("metrics provider %r failed; left out of this scrape", provider)
        return out

    def describe(self) -> Iterator[Any]:
        # Names only, so that registering does not call every engine (prometheus-client calls
        # describe() to detect duplicate names).
        core = _prometheus().core
        CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily = (
            core.CounterMetricFamily, core.GaugeMetricFamily, core.HistogramMetricFamily
        )
        for name, _, doc in _COUNTERS:
            yield CounterMetricFamily(name, doc, labels=LABELS)
        for name, _, doc in _HISTOGRAMS:
            yield HistogramMetricFamily(name, doc, labels=LABELS)
        for name, _, doc in _GAUGES:
            yield GaugeMetricFamily(name, doc, labels=LABELS)

    def collect(self) -> Iterator[Any]:
        core = _prometheus().core
        CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily = (
            core.CounterMetricFamily, core.GaugeMetricFamily, core.HistogramMetricFamily
        )
        samples = self.samples()
        for name, field, doc in _COUNTERS:
            fam = CounterMetricFamily(name, doc, labels=LABELS)
            for s in samples:
                fam.add_metric([s.model, s.backend], getattr(s, field))
            yield fam
        for name, field, doc in _HISTOGRAMS:
            fam = HistogramMetricFamily(name, doc, labels=LABELS)
            for s in samples:
                h = getattr(s, field)
                if h is not None:
                    fam.add_metric([s.model, s.backend], h.cumulative(), h.sum)
            yield fam
        for name, field, doc in _GAUGES:
            fam = GaugeMetricFamily(name, doc, labels=LABELS)
            for s in samples:
                v = getattr(s, field)
                if v is not None:
                    fam.add_metric([s.model, s.backend], v)
            yield fam


_default: EngineCollector | None = None
_default_lock = threading.Lock()


def default_collector() -> EngineCollector:
    """The process-wide collector that ``track`` fills and ``start_http_server`` serves by default."""
    global _default
    with _default_lock:
        if _default is None:
            _default = EngineCollector()
        return _default


def track(engine: Provider) -> None:
    """Expose ``engine`` through the default collector (the ``edgecore_engine_started`` hook of
    :mod:`edgecore.metrics.plugin` calls this for every engine that loads a model)."""
    default_collector().add(engine)


def untrack(engine: Provider) -> None:
    """Stop exposing ``engine`` (``edgecore_engine_closed`` calls this when it closes)."""
    default_collector().remove(engine)


def make_registry(engines: Iterable[Provider] | None = None) -> CollectorRegistry:
    """A fresh registry with one collector: over ``engines``, or the default (tracked) collector."""
    registry = _prometheus().CollectorRegistry(auto_describe=True)
    registry.register(default_collector() if engines is None else EngineCollector(engines))
    return registry


def generate_latest(engines: Iterable[Provider] | None = None) -> bytes:
    """The text exposition (format 0.0.4) of ``engines`` (default: the tracked engines)."""
    return _prometheus().generate_latest(make_registry(engines))


def start_http_server(
    port: int, addr: str = "0.0.0.0", *, engines: Iterable[Provider] | None = None,
    registry: CollectorRegistry | None = None,
) -> tuple[Any, threading.Thread]:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread; returns ``(server, thread)``.

    Without ``engines`` it serves the engines registered with :func:`track` (every engine loaded
    with a plugin manager that holds the built-in metrics plugin: the default one does), so ``start_http_server(9100)`` alone is enough. ``port=0`` picks a free port
    (``server.server_port``). Stop it with ``server.shutdown()``.
    """
    prometheus_client = _prometheus()
    if registry is None:
        registry = make_registry(engines)
    elif engines is not None:
        registry.register(EngineCollector(engines))
    server, thread = prometheus_client.start_http_server(port, addr=addr, registry=registry)
    logger.info("serving Prometheus metrics on http://%s:%d/metrics", addr, server.server_port)
    return server, thread
