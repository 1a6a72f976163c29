"""Request statistics: exact counts, latency percentiles over a sliding window.

Concurrency: ``record`` is called from every thread that finishes a request; one lock guards the
counters and the ring of recent latencies. ``snapshot`` copies under the lock and computes outside it.
"""

from __future__ import annotations

import threading
import time
from typing import Mapping

import attrs
import numpy as np

__all__ = ["EngineStats", "StatsRecorder"]

WINDOW = 65536  # latencies kept for percentiles


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


class StatsRecorder:
    """Collects per-request and per-execution figures for :class:`EngineStats`."""

    def __init__(self, window: int = WINDOW) -> None:
        self._lock = threading.Lock()
        self._window = window
        self._latency = np.zeros(window, dtype=np.int64)
        self._count = 0
        self._failed = self._rejected = self._timed_out = 0
        self._latency_sum = 0
        self._queue_sum = 0
        self._compute_sum = 0
        self._executions = 0
        self._batches: dict[int, int] = {}
        self._started = time.perf_counter()

    def record(self, latency_ns: int, queue_ns: int = 0) -> None:
        """One request answered successfully."""
        with self._lock:
            self._latency[self._count % self._window] = latency_ns
            self._count += 1
            self._latency_sum += latency_ns
            self._queue_sum += queue_ns

    def record_direct(self, latency_ns: int) -> None:
        """One request run directly (no queue): one execution of batch size 1."""
        with self._lock:
            self._latency[self._count % self._window] = latency_ns
            self._count += 1
            self._latency_sum += latency_ns
            self._executions += 1
            self._compute_sum += latency_ns
            self._batches[1] = self._batches.get(1, 0) + 1

    def record_batch(self, latencies_ns: list[int], queue_ns: int, batch_size: int, compute_ns: int) -> None:
        """One backend execution of ``batch_size`` items answering requests that took ``latencies_ns``
        end to end and waited ``queue_ns`` in all (one lock for the whole batch)."""
        with self._lock:
            window, ring, count = self._window, self._latency, self._count
            for latency in latencies_ns:
                ring[count % window] = latency
                count += 1
            self._count = count
            self._latency_sum += sum(latencies_ns)
            self._queue_sum += queue_ns
            self._executions += 1
            self._compute_sum += compute_ns
            self._batches[batch_size] = self._batches.get(batch_size, 0) + 1

    def record_execution(self, batch_size: int, compute_ns: int) -> None:
        """One backend execution of ``batch_size`` requests."""
        with self._lock:
            self._executions += 1
            self._compute_sum += compute_ns
            self._batches[batch_size] = self._batches.get(batch_size, 0) + 1

    def record_failure(self, kind: str = "failed") -> None:
        with self._lock:
            if kind == "rejected":
                self._rejected += 1
            elif kind == "timed_out":
                self._timed_out += 1
            else:
                self._failed += 1

    def snapshot(self, instance_utilization: tuple[float, ...] = (), queue_depth: int = 0) -> EngineStats:
        with self._lock:
            count = self._count
            recent = self._latency[: min(count, self._window)].copy()
            latency_sum, queue_sum, compute_sum = self._latency_sum, self._queue_sum, self._compute_sum
            executions, batches = self._executions, dict(sorted(self._batches.items()))
            failed, rejected, timed_out = self._failed, self._rejected, self._timed_out
        uptime = time.perf_counter() - self._started
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
