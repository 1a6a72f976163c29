"""Engine metrics: the ``engine.metrics()`` snapshot, and their Prometheus exposition with
Triton-like metric names.

``engine.metrics()`` returns an :class:`EngineMetrics` (the seed's ``memory_usage_bytes`` and
``cpu_utilization_percent``, peak memory, pool statistics, queue depth), measured on the process by
a :class:`ProcessSampler` (psutil).

An engine describes itself to this module with one frozen record, :class:`MetricsSample`, built on
demand (at scrape time) by ``engine.metrics_sample()`` -- or by any zero-argument callable. The
collector reads nothing else from the engine. Its fields, and the metric each becomes (labels
``model`` and ``backend`` on every series):

==================================  ===========================================  ==========
MetricsSample field                 Prometheus metric                            type
==================================  ===========================================  ==========
``inference_count``                 ``edgecore_inference_count`` (``_total``)    counter
``inference_exec_count``            ``edgecore_inference_exec_count``            counter
``request_success``                 ``edgecore_inference_request_success``       counter
``request_failure``                 ``edgecore_inference_request_failure``       counter
``request_duration_us``             ``edgecore_request_duration_us``             histogram
``queue_duration_us``               ``edgecore_queue_duration_us``               histogram
``compute_duration_us``             ``edgecore_compute_duration_us``             histogram
``batch_size`` (optional)           ``edgecore_batch_size``                      histogram
``memory_usage_bytes``              ``edgecore_memory_usage_bytes``              gauge
``peak_memory_bytes``               ``edgecore_peak_memory_bytes``               gauge
``cpu_utilization_percent``         ``edgecore_cpu_utilization_percent``         gauge
``queue_depth``                     ``edgecore_queue_depth``                     gauge
``pool_in_use_bytes`` (optional)    ``edgecore_pool_in_use_bytes``               gauge
``pool_reserved_bytes`` (optional)  ``edgecore_pool_reserved_bytes``             gauge
==================================  ===========================================  ==========

As in Triton, ``inference_count`` counts inferences (a batch of 8 counts 8) and
``inference_exec_count`` counts model executions (that batch counts 1). Counters are exposed the
OpenMetrics way: family ``edgecore_inference_count``, sample ``edgecore_inference_count_total``.
Optional fields left as None are not exposed.

Histograms are :class:`HistogramSample` snapshots; an engine keeps one :class:`LatencyHistogram`
per figure and calls ``observe(value)`` (thread-safe, a lock held for a bisect and an increment).

prometheus-client is an optional dependency (``edgecore[metrics]``): it is imported inside the
functions that need it, never at import time of this module.

Concurrency: the collector is called from the scrape thread (prometheus-client's HTTP server, or the
caller's); it holds providers under a lock and calls each provider once per scrape. A provider that
raises is logged and skipped for that scrape.
"""

from __future__ import annotations

import bisect
import logging
import os
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence, Union

import attrs

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from edgecore.memory import PoolStatistics

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BATCH_BUCKETS",
    "DEFAULT_LATENCY_BUCKETS_US",
    "EngineCollector",
    "EngineMetrics",
    "HistogramSample",
    "LatencyHistogram",
    "MetricsSample",
    "ProcessSampler",
    "default_collector",
    "generate_latest",
    "make_registry",
    "start_http_server",
    "track",
    "untrack",
]

#: Upper bounds (µs) of the latency histograms: 50 µs .. 10 s, roughly 1-2.5-5 per decade.
DEFAULT_LATENCY_BUCKETS_US: tuple[float, ...] = (
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
)
DEFAULT_BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _bounds(instance: Any, attribute: attrs.Attribute, value: tuple[float, ...]) -> None:
    if any(b >= c for b, c in zip(value, value[1:])):
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be strictly increasing, got {value}")
    if any(b != b or b in (float("inf"), float("-inf")) for b in value):
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be finite (+Inf is implicit), got {value}")


@attrs.frozen(kw_only=True)
class HistogramSample:
    """A histogram snapshot: ``counts[i]`` observations in ``(bounds[i-1], bounds[i]]``, and
    ``counts[-1]`` above the last bound (the +Inf bucket). Not cumulative."""

    bounds: tuple[float, ...] = attrs.field(converter=lambda v: tuple(float(b) for b in v), validator=_bounds)
    counts: tuple[int, ...] = attrs.field(converter=lambda v: tuple(int(c) for c in v))
    sum: float = 0.0

    @counts.validator
    def _check_counts(self, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
        if len(value) != len(self.bounds) + 1:
            raise ValueError(
                f"HistogramSample.counts needs len(bounds) + 1 = {len(self.bounds) + 1} entries (the last is +Inf), "
                f"got {len(value)}"
            )
        if any(c < 0 for c in value):
            raise ValueError(f"HistogramSample.counts must not be negative, got {value}")

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs as Prometheus writes them, ending with ``+Inf``."""
        out, total = [], 0
        for bound, c in zip(self.bounds, self.counts):
            total += c
            out.append((_le(bound), total))
        out.append(("+Inf", total + self.counts[-1]))
        return out

    @classmethod
    def empty(cls, bounds: Sequence[float] = DEFAULT_LATENCY_BUCKETS_US) -> HistogramSample:
        return cls(bounds=bounds, counts=(0,) * (len(bounds) + 1))

    @classmethod
    def from_values(cls, values: Iterable[float], bounds: Sequence[float] = DEFAULT_LATENCY_BUCKETS_US) -> HistogramSample:
        h = LatencyHistogram(bounds)
        for v in values:
            h.observe(v)
        return h.snapshot()


def _le(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


class LatencyHistogram:
    """A thread-safe accumulating histogram; ``snapshot()`` gives a :class:`HistogramSample`."""

    __slots__ = ("_bounds", "_counts", "_sum", "_lock")

    def __init__(self, bounds: Sequence[float] = DEFAULT_LATENCY_BUCKETS_US) -> None:
        self._bounds = tuple(float(b) for b in bounds)
        if any(b >= c for b, c in zip(self._bounds, self._bounds[1:])):
            raise ValueError(f"LatencyHistogram bounds must be strictly increasing, got {self._bounds}")
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus "le").
        i = bisect.bisect_left(self._bounds, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def snapshot(self) -> HistogramSample:
        with self._lock:
            return HistogramSample(bounds=self._bounds, counts=tuple(self._counts), sum=self._sum)

    def reset(self) -> None:
        with self._lock:
            self._counts = [0] * (len(self._bounds) + 1)
            self._sum = 0.0


def _non_negative(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and value < 0:
        raise ValueError(f"MetricsSample.{attribute.name} must not be negative, got {value!r}")


_opt_int = attrs.field(default=None, validator=_non_negative)


@attrs.frozen(kw_only=True)
class MetricsSample:
    """What one engine reports at one scrape; see the module docstring for the metric names."""

    model: str
    backend: str
    inference_count: int = attrs.field(default=0, validator=_non_negative)
    inference_exec_count: int = attrs.field(default=0, validator=_non_negative)
    request_success: int = attrs.field(default=0, validator=_non_negative)
    request_failure: int = attrs.field(default=0, validator=_non_negative)
    request_duration_us: HistogramSample = attrs.field(factory=HistogramSample.empty)
    queue_duration_us: HistogramSample = attrs.field(factory=HistogramSample.empty)
    compute_duration_us: HistogramSample = attrs.field(factory=HistogramSample.empty)
    batch_size: HistogramSample | None = None
    memory_usage_bytes: int = attrs.field(default=0, validator=_non_negative)
    peak_memory_bytes: int = attrs.field(default=0, validator=_non_negative)
    cpu_utilization_percent: float = attrs.field(default=0.0, validator=_non_negative)
    queue_depth: int = attrs.field(default=0, validator=_non_negative)
    pool_in_use_bytes: int | None = _opt_int
    pool_reserved_bytes: int | None = _opt_int


@attrs.frozen(kw_only=True)
class EngineMetrics:
    """What ``engine.metrics()`` returns: the process and the engine's resources at one moment.

    ``memory_usage_bytes``: the process's resident set size (RSS); ``peak_memory_bytes``: its peak
    RSS since it started; ``cpu_utilization_percent``: CPU time the process used over wall time,
    as a share of all logical cores (0-100), measured since the previous reading taken at least
    ``ProcessSampler.min_interval_s`` earlier (or since the engine loaded); ``model_memory_bytes``:
    what the compiled models report holding; ``pool``: the memory pool's statistics (None without
    a pool); ``queue_depth``: requests waiting in the scheduler queue.
    """

    model: str
    backend: str
    memory_usage_bytes: int
    peak_memory_bytes: int
    cpu_utilization_percent: float
    cpu_count: int
    model_memory_bytes: int = 0
    pool: PoolStatistics | None = None
    queue_depth: int = 0
    timestamp: float = 0.0  # time.time() of the reading

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data["pool"] = self.pool.to_json() if self.pool is not None else None
        return data


class ProcessSampler:
    """RSS, peak RSS and CPU utilization of this process (psutil), for :class:`EngineMetrics`.

    CPU utilization is the process's CPU time over the wall time since the previous reading, divided
    by the logical core count. Readings closer together than ``min_interval_s`` return the previous
    figure, so that two consumers (a Prometheus scrape and ``engine.metrics()``) do not shrink each
    other's window to nothing. Thread-safe.
    """

    def __init__(self, min_interval_s: float = 0.5) -> None:
        import psutil

        self.min_interval_s = min_interval_s
        self._process = psutil.Process()
        self.cpu_count = psutil.cpu_count() or os.cpu_count() or 1
        self._lock = threading.Lock()
        self._wall, self._cpu = time.monotonic(), self._cpu_seconds()
        self._percent: float | None = None

    def _cpu_seconds(self) -> float:
        times = self._process.cpu_times()
        return times.user + times.system

    def cpu_percent(self) -> float:
        with self._lock:
            wall, cpu = time.monotonic(), self._cpu_seconds()
            elapsed = wall - self._wall
            if self._percent is not None and elapsed < self.min_interval_s:
                return self._percent
            percent = 100.0 * (cpu - self._cpu) / elapsed / self.cpu_count if elapsed > 0 else 0.0
            # CPU times advance in clock ticks (10 ms): over a short window the ratio can overshoot.
            self._percent = min(max(0.0, percent), 100.0)
            self._wall, self._cpu = wall, cpu
            return self._percent

    def memory(self) -> tuple[int, int]:
        """(RSS, peak RSS) of the process in bytes."""
        info = self._process.memory_info()
        rss = int(info.rss)
        peak = getattr(info, "peak_wset", None)  # Windows
        if peak is None:
            try:
                import resource
            except ImportError:  # pragma: no cover - not POSIX
                return rss, rss
            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB elsewhere
        return rss, max(int(peak), rss)


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
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        for name, _, doc in _COUNTERS:
            yield CounterMetricFamily(name, doc, labels=LABELS)
        for name, _, doc in _HISTOGRAMS:
            yield HistogramMetricFamily(name, doc, labels=LABELS)
        for name, _, doc in _GAUGES:
            yield GaugeMetricFamily(name, doc, labels=LABELS)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

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
    """Expose ``engine`` through the default collector (the engine calls this when it starts)."""
    default_collector().add(engine)


def untrack(engine: Provider) -> None:
    """Stop exposing ``engine`` (the engine calls this when it closes)."""
    default_collector().remove(engine)


def make_registry(engines: Iterable[Provider] | None = None) -> CollectorRegistry:
    """A fresh registry with one collector: over ``engines``, or the default (tracked) collector."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=True)
    registry.register(default_collector() if engines is None else EngineCollector(engines))
    return registry


def generate_latest(engines: Iterable[Provider] | None = None) -> bytes:
    """The text exposition (format 0.0.4) of ``engines`` (default: the tracked engines)."""
    import prometheus_client

    return prometheus_client.generate_latest(make_registry(engines))


def start_http_server(
    port: int, addr: str = "0.0.0.0", *, engines: Iterable[Provider] | None = None,
    registry: CollectorRegistry | None = None,
) -> tuple[Any, threading.Thread]:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread; returns ``(server, thread)``.

    Without ``engines`` it serves the engines registered with :func:`track` (the engine does that
    when it starts), so ``start_http_server(9100)`` alone is enough. ``port=0`` picks a free port
    (``server.server_port``). Stop it with ``server.shutdown()``.
    """
    try:
        import prometheus_client
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from edgecore.errors import EdgecoreError

        raise EdgecoreError(
            "the Prometheus exposition needs prometheus-client: pip install 'edgecore[metrics]'"
        ) from exc
    if registry is None:
        registry = make_registry(engines)
    elif engines is not None:
        registry.register(EngineCollector(engines))
    server, thread = prometheus_client.start_http_server(port, addr=addr, registry=registry)
    logger.info("serving Prometheus metrics on http://%s:%d/metrics", addr, server.server_port)
    return server, thread
