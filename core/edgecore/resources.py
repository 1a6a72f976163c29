"""What an engine reports about itself, as values: histogram snapshots, the Prometheus sample
record, the ``engine.metrics()`` snapshot, and the process sampler (psutil) behind it.

Layer 4 (observation): plain values and one sampler, nothing that serves or registers. The
Prometheus exposition of these records (collector, registry of live engines, HTTP server) is
:mod:`edgecore.metrics`, a layer-8 tool; see that module for the metric names each
:class:`MetricsSample` field becomes.

Concurrency: the records are frozen. :class:`ProcessSampler` may be read from any thread (a lock
guards its previous reading).
"""

from __future__ import annotations

import bisect
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import attrs

from edgecore.errors import ConfigurationError

if TYPE_CHECKING:
    from edgecore.memory import PoolStatistics

__all__ = [
    "DEFAULT_BATCH_BUCKETS",
    "DEFAULT_LATENCY_BUCKETS_US",
    "EngineMetrics",
    "HistogramSample",
    "MetricsSample",
    "ProcessSampler",
]

#: Upper bounds (µs) of the latency histograms: 50 µs .. 10 s, roughly 1-2.5-5 per decade.
DEFAULT_LATENCY_BUCKETS_US: tuple[float, ...] = (
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
)
DEFAULT_BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _bounds(instance: Any, attribute: attrs.Attribute, value: tuple[float, ...]) -> None:
    if any(b >= c for b, c in zip(value, value[1:])):
        raise ConfigurationError(f"{type(instance).__name__}.{attribute.name} must be strictly increasing, got {value}")
    if any(b != b or b in (float("inf"), float("-inf")) for b in value):
        raise ConfigurationError(
            f"{type(instance).__name__}.{attribute.name} must be finite (+Inf is implicit), got {value}"
        )


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
            raise ConfigurationError(
                f"HistogramSample.counts needs len(bounds) + 1 = {len(self.bounds) + 1} entries (the last is +Inf), "
                f"got {len(value)}"
            )
        if any(c < 0 for c in value):
            raise ConfigurationError(f"HistogramSample.counts must not be negative, got {value}")

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
        """The histogram of ``values`` (a value equal to a bound falls in that bucket, Prometheus' ``le``)."""
        edges = tuple(float(b) for b in bounds)
        counts = [0] * (len(edges) + 1)
        total = 0.0
        for v in values:
            counts[bisect.bisect_left(edges, v)] += 1
            total += v
        return cls(bounds=edges, counts=counts, sum=total)


def _le(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def _non_negative(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and value < 0:
        raise ConfigurationError(f"{type(instance).__name__}.{attribute.name} must not be negative, got {value!r}")


_opt_int = attrs.field(default=None, validator=_non_negative)


@attrs.frozen(kw_only=True)
class MetricsSample:
    """What one engine reports at one scrape (``engine.metrics_sample()``); :mod:`edgecore.metrics`
    lists the Prometheus metric each field becomes. Optional fields left as None are not exposed."""

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
