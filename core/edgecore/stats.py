"""Request statistics: exact counts, latency percentiles over a sliding window, and cumulative
latency histograms (the Prometheus exposition's ``edgecore_*_duration_us``).

Concurrency: ``record_direct``/``record_batch``/``record_failure`` are called from every thread that
finishes a request; one lock guards the counters, the histogram buckets and the ring of recent
latencies. ``snapshot`` copies under the lock and computes outside it.

Cost on the direct path (``record_direct``, once per ``Engine.run``): one lock, the ring store, one
bisect into the latency buckets and one bucket increment. Queue, compute and batch-size histograms
of direct requests are derived at snapshot time (queue 0, compute = latency, batch size 1).
"""

from __future__ import annotations

import bisect
import collections
import threading
import time
from typing import Mapping

import attrs
import numpy as np

from edgecore.resources import DEFAULT_BATCH_BUCKETS, DEFAULT_LATENCY_BUCKETS_US, HistogramSample

__all__ = ["EngineStats", "StatsHistograms", "StatsRecorder"]

WINDOW = 65536  # latencies kept for percentiles
#: Latency bucket bounds in ns (bisect_left: a value equal to a bound falls in that bucket, "le").
_BOUNDS_NS = tuple(int(b * 1000) for b in DEFAULT_LATENCY_BUCKETS_US)
_BUCKETS = len(_BOUNDS_NS) + 1
_BOUNDS_ARRAY = np.array(_BOUNDS_NS, dtype=np.int64)
_FOLD_AT = 1024  # direct requests recorded between two folds into the counters


def _ms(ns: float) -> float:
    return float(ns) / 1e6


@attrs.frozen(kw_only=True)
class EngineStats:
    """A snapshot of an engine's request statistics (latencies in milliseconds).

    Counts are exact since the engine started; percentiles cover the last ``window`` requests.
    ``latency`` is end to end (queue included when the scheduler is on); ``queue`` is the time spent
    waiting for a batch; ``batch_size_histogram`` maps batch size (items) -> backend executions;
    ``instance_utilization`` is each scheduler instance's busy share of wall time; ``queue_depth`` the
    requests waiting when the snapshot was taken. Requests answered with an error count in
    ``failed_inferences`` (closed unanswered included), ``rejected_requests`` (queue full) or
    ``timed_out_requests``, not in ``total_inferences``.
    """

    total_inferences: int = 0
    failed_inferences: int = 0
    rejected_requests: int = 0
    timed_out_requests: int = 0
    total_executions: int = 0
    average_latency_ms: float = 0.0
    p50_latency_ms: float = 0.0
    p95_latency_ms: float = 0.0
    p99_latency_ms: float = 0.0
    min_latency_ms: float = 0.0
    max_latency_ms: float = 0.0
    average_queue_ms: float = 0.0
    average_compute_ms: float = 0.0
    throughput_per_s: float = 0.0
    uptime_s: float = 0.0
    window: int = 0
    batch_size_histogram: Mapping[int, int] = attrs.field(factory=dict)
    instance_utilization: tuple[float, ...] = ()
    queue_depth: int = 0

    def to_json(self) -> dict:
        data = attrs.asdict(self)
        data["batch_size_histogram"] = {str(k): v for k, v in self.batch_size_histogram.items()}
        data["instance_utilization"] = list(self.instance_utilization)
        return data


@attrs.frozen(kw_only=True)
class StatsHistograms:
    """Cumulative histograms since the engine started, in µs (batch size in items).

    ``request_duration_us``: end-to-end latency of each successful request; ``queue_duration_us``:
    its wait in the queue (0 on the direct path); ``compute_duration_us``: the backend execution
    that answered it (one observation per request, so a batch of 8 adds 8); ``batch_size``: one
    observation per execution.
    """

    request_duration_us: HistogramSample
    queue_duration_us: HistogramSample
    compute_duration_us: HistogramSample
    batch_size: HistogramSample


_bisect = bisect.bisect_left


def _bucket(value_ns: int) -> int:
    return _bisect(_BOUNDS_NS, value_ns)


class StatsRecorder:
    """Collects per-request and per-execution figures for :class:`EngineStats`."""

    def __init__(self, window: int = WINDOW) -> None:
        self._lock = threading.Lock()
        self._window = window
        self._latency = np.zeros(window, dtype=np.int64)
        self._count = 0
        self._direct: collections.deque[int] = collections.deque()  # direct requests not yet folded in
        self._failed = self._rejected = self._timed_out = 0
        self._latency_sum = 0
        self._queue_sum = 0
        self._compute_sum = 0
        self._executions = 0
        self._batches: dict[int, int] = {}
        self._started = time.perf_counter()
        # Histogram buckets: direct requests (latency = compute, queue 0) in one list; the
        # scheduler's in three. Sums: _latency_sum and _queue_sum cover every request;
        # _other_latency_sum / _other_compute_sum only the non-direct ones.
        self._h_direct = [0] * _BUCKETS
        self._h_request = [0] * _BUCKETS
        self._h_queue = [0] * _BUCKETS
        self._h_compute = [0] * _BUCKETS
        self._other_latency_sum = 0
        self._other_compute_sum = 0

    def record_direct(self, latency_ns: int) -> None:
        """One request run directly (no queue): one execution of batch size 1.

        The hot path only appends to a deque (atomic, no lock); the figures are folded in, vectorized,
        every ``_FOLD_AT`` requests and before every snapshot.
        """
        direct = self._direct
        direct.append(latency_ns)
        if len(direct) >= _FOLD_AT:
            with self._lock:
                self._fold_direct()

    def _fold_direct(self) -> None:
        """Fold pending direct requests into the counters; called with the lock held."""
        direct = self._direct
        n = len(direct)
        if not n:
            return
        pop = direct.popleft
        values = np.fromiter((pop() for _ in range(n)), dtype=np.int64, count=n)
        self._latency[(self._count + np.arange(n)) % self._window] = values
        total = int(values.sum())
        self._count += n
        self._latency_sum += total
        self._executions += n
        self._compute_sum += total
        self._batches[1] = self._batches.get(1, 0) + n
        counts = np.bincount(np.searchsorted(_BOUNDS_ARRAY, values, side="left"), minlength=_BUCKETS)
        for i in np.flatnonzero(counts):
            self._h_direct[i] += int(counts[i])

    def record_batch(self, latencies_ns: list[int], queue_ns: int, batch_size: int, compute_ns: int) -> None:
        """One backend execution of ``batch_size`` items answering requests that took ``latencies_ns``
        end to end and waited ``queue_ns`` in all (one lock for the whole batch)."""
        n = len(latencies_ns)
        total = sum(latencies_ns)
        # Every request of a batch left the queue at the same moment and was answered by the same
        # run, so latency_i - queue_i is the same for all: (sum of latencies - sum of waits) / n.
        service = (total - queue_ns) // n if n else 0
        lat_buckets = [_bucket(latency) for latency in latencies_ns]
        queue_buckets = [_bucket(max(latency - service, 0)) for latency in latencies_ns]
        c = _bucket(compute_ns)
        with self._lock:
            window, ring, count = self._window, self._latency, self._count
            for latency in latencies_ns:
                ring[count % window] = latency
                count += 1
            self._count = count
            self._latency_sum += total
            self._queue_sum += queue_ns
            self._executions += 1
            self._compute_sum += compute_ns
            self._batches[batch_size] = self._batches.get(batch_size, 0) + 1
            h_request, h_queue = self._h_request, self._h_queue
            for i in lat_buckets:
                h_request[i] += 1
            for i in queue_buckets:
                h_queue[i] += 1
            self._h_compute[c] += n
            self._other_latency_sum += total
            self._other_compute_sum += compute_ns * n

    def record_failure(self, kind: str = "failed") -> None:
        with self._lock:
            if kind == "rejected":
                self._rejected += 1
            elif kind == "timed_out":
                self._timed_out += 1
            else:
                self._failed += 1

    def snapshot(self, instance_utilization: tuple[float, ...] = (), queue_depth: int = 0) -> EngineStats:
        return self.snapshot_with_histograms(instance_utilization, queue_depth, histograms=False)[0]

    def snapshot_with_histograms(
        self, instance_utilization: tuple[float, ...] = (), queue_depth: int = 0, *, histograms: bool = True
    ) -> tuple[EngineStats, StatsHistograms | None]:
        """The statistics and (when asked) the histograms, from one consistent copy."""
        with self._lock:
            self._fold_direct()
            count = self._count
            recent = self._latency[: min(count, self._window)].copy()
            latency_sum, queue_sum, compute_sum = self._latency_sum, self._queue_sum, self._compute_sum
            executions, batches = self._executions, dict(sorted(self._batches.items()))
            failed, rejected, timed_out = self._failed, self._rejected, self._timed_out
            if histograms:
                hist = (list(self._h_direct), list(self._h_request), list(self._h_queue), list(self._h_compute),
                        self._other_latency_sum, self._other_compute_sum)
        uptime = time.perf_counter() - self._started
        stats = self._stats(count, recent, latency_sum, queue_sum, compute_sum, executions, batches, failed, rejected,
                            timed_out, uptime, instance_utilization, queue_depth)
        if not histograms:
            return stats, None
        return stats, _histograms(*hist, latency_sum=latency_sum, queue_sum=queue_sum, batches=batches)

    @staticmethod
    def _stats(
        count: int, recent: np.ndarray, latency_sum: int, queue_sum: int, compute_sum: int, executions: int,
        batches: dict[int, int], failed: int, rejected: int, timed_out: int, uptime: float,
        instance_utilization: tuple[float, ...], queue_depth: int,
    ) -> EngineStats:
        stats = EngineStats(
            total_inferences=count,
            failed_inferences=failed,
            rejected_requests=rejected,
            timed_out_requests=timed_out,
            total_executions=executions,
            uptime_s=uptime,
            throughput_per_s=count / uptime if uptime > 0 else 0.0,
            batch_size_histogram=batches,
            instance_utilization=instance_utilization,
            queue_depth=queue_depth,
            window=len(recent),
        )
        if not count:
            return stats
        p50, p95, p99 = np.percentile(recent, (50, 95, 99))
        return attrs.evolve(
            stats,
            average_latency_ms=_ms(latency_sum / count),
            p50_latency_ms=_ms(p50),
            p95_latency_ms=_ms(p95),
            p99_latency_ms=_ms(p99),
            min_latency_ms=_ms(recent.min()),
            max_latency_ms=_ms(recent.max()),
            average_queue_ms=_ms(queue_sum / count),
            average_compute_ms=_ms(compute_sum / executions) if executions else 0.0,
        )


def _histograms(
    direct: list[int], request: list[int], queue: list[int], compute: list[int], other_latency_sum: int,
    other_compute_sum: int, *, latency_sum: int, queue_sum: int, batches: dict[int, int],
) -> StatsHistograms:
    direct_count = sum(direct)
    direct_sum = latency_sum - other_latency_sum
    queue = list(queue)
    queue[0] += direct_count  # direct requests wait 0 ns
    batch_counts = [0] * (len(DEFAULT_BATCH_BUCKETS) + 1)
    for size, n in batches.items():
        batch_counts[bisect.bisect_left(DEFAULT_BATCH_BUCKETS, size)] += n
    bounds = DEFAULT_LATENCY_BUCKETS_US
    return StatsHistograms(
        request_duration_us=HistogramSample(
            bounds=bounds, counts=[a + b for a, b in zip(direct, request)], sum=latency_sum / 1000.0
        ),
        queue_duration_us=HistogramSample(bounds=bounds, counts=queue, sum=queue_sum / 1000.0),
        compute_duration_us=HistogramSample(
            bounds=bounds, counts=[a + b for a, b in zip(direct, compute)],
            sum=(direct_sum + other_compute_sum) / 1000.0,
        ),
        batch_size=HistogramSample(
            bounds=DEFAULT_BATCH_BUCKETS, counts=batch_counts, sum=float(sum(k * v for k, v in batches.items()))
        ),
    )
