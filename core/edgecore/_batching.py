"""Batching pieces for :mod:`edgecore.scheduler`: the request queue, which models batch, and the
adaptive batch-size limit.

Concurrency: nothing here locks. :class:`RequestQueue` and :class:`AdaptiveBatchSize` are used only
under the scheduler's lock; a :class:`Request` is written once, before it is queued.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any, Sequence

from edgecore.tensor import TensorSpec

if TYPE_CHECKING:
    from concurrent.futures import Future

    import numpy as np

__all__ = ["AdaptiveBatchSize", "Request", "RequestQueue", "batch_dimension"]

NEVER = 1 << 62  # a deadline that never comes (perf_counter_ns)


class Request:
    """One submitted request: checked feeds, its future, and what the scheduler needs to place it."""

    __slots__ = ("feeds", "future", "key", "items", "deadline", "arrival", "rid")

    def __init__(
        self, feeds: dict[str, np.ndarray], future: Future, key: Any, items: int, deadline: int, arrival: int, rid: int
    ) -> None:
        self.feeds = feeds
        self.future = future
        self.key = key  # shapes without the batch dimension (None when the model is not batched)
        self.items = items  # along the batch dimension
        self.deadline = deadline  # perf_counter_ns, 0 = none
        self.arrival = arrival  # perf_counter_ns
        self.rid = rid  # request id (profiler)


class RequestQueue:
    """Queued requests by priority level (0 first), then by shape key, each in arrival order.

    ``queued`` counts requests, ``items[key]`` the items of ``key`` over all levels, and
    ``next_deadline`` is a lower bound of the earliest deadline queued (exact after :meth:`expire`).
    """

    def __init__(self, levels: int) -> None:
        self._levels: list[dict[Any, collections.deque[Request]]] = [{} for _ in range(levels)]
        self.items: dict[Any, int] = {}
        self.queued = 0
        self.next_deadline = NEVER

    def push(self, request: Request, level: int) -> None:
        queues = self._levels[level]
        queue = queues.get(request.key)
        if queue is None:
            queue = queues[request.key] = collections.deque()
        queue.append(request)
        self.items[request.key] = self.items.get(request.key, 0) + request.items
        self.queued += 1
        if request.deadline and request.deadline < self.next_deadline:
            self.next_deadline = request.deadline

    def head(self) -> Request:
        """The oldest request of the highest non-empty priority level (the queue must not be empty)."""
        for queues in self._levels:
            if queues:
                head = None
                for queue in queues.values():
                    if head is None or queue[0].arrival < head.arrival:
                        head = queue[0]
                return head
        raise LookupError("head() of an empty RequestQueue")

    def take(self, key: Any, size: int) -> list[Request]:
        """Up to ``size`` items of ``key``'s requests, highest priority first, in arrival order.

        A request larger than ``size`` is taken alone when it leads.
        """
        batch: list[Request] = []
        total = 0
        for queues in self._levels:
            queue = queues.get(key)
            if not queue:
                continue
            while queue and (total + queue[0].items <= size or not batch):
                request = queue.popleft()
                batch.append(request)
                total += request.items
            if not queue:
                del queues[key]
            if queue or total >= size:
                break
        left = self.items[key] - total
        if left:
            self.items[key] = left
        else:
            del self.items[key]
        self.queued -= len(batch)
        return batch

    def expire(self, now: int, expired: list[Request]) -> list[Request]:
        """Move the requests whose deadline passed into ``expired`` (returned); make ``next_deadline`` exact."""
        earliest = NEVER
        for queues in self._levels:
            for key in list(queues):
                queue = queues[key]
                keep = [r for r in queue if not r.deadline or r.deadline > now]
                if len(keep) != len(queue):
                    for request in queue:
                        if request.deadline and request.deadline <= now:
                            expired.append(request)
                            self.items[key] -= request.items
                            self.queued -= 1
                    if keep:
                        queues[key] = collections.deque(keep)
                    else:
                        del queues[key]
                for request in keep:
                    if request.deadline and request.deadline < earliest:
                        earliest = request.deadline
        for key in [k for k, n in self.items.items() if not n]:
            del self.items[key]
        self.next_deadline = earliest
        return expired

    def take_all(self) -> list[Request]:
        """Every queued request, highest priority first; the queue is left empty."""
        taken = [request for queues in self._levels for queue in queues.values() for request in queue]
        for queues in self._levels:
            queues.clear()
        self.items.clear()
        self.queued = 0
        self.next_deadline = NEVER
        return taken


def batch_dimension(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> str | None:
    """Why ``inputs``/``outputs`` cannot be batched along dimension 0, or None when they can.

    Every input must start with the same dynamic dimension (one symbol, or the lone input's unnamed
    one) and no output may start with a fixed one. Outputs are checked again on every batched run.
    """
    if not inputs:
        return "the model has no inputs"
    firsts = {spec.shape[0] if spec.rank else 0 for spec in inputs}
    if len(firsts) != 1:
        return f"its inputs start with different dimensions {sorted(map(str, firsts))}"
    first = firsts.pop()
    if isinstance(first, int):
        return f"its inputs' first dimension is fixed ({first}), not a batch dimension"
    if first is None and len(inputs) > 1:
        return "its inputs' first dimensions are unnamed, so they need not agree"
    fixed = [spec.name for spec in outputs if not spec.rank or isinstance(spec.shape[0], int)]
    if fixed:
        return f"outputs {fixed} have no dynamic first dimension"
    return None


def _buckets(max_batch_size: int) -> tuple[int, ...]:
    sizes = [1]
    while sizes[-1] * 2 <= max_batch_size:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != max_batch_size:
        sizes.append(max_batch_size)
    return tuple(sizes)


class AdaptiveBatchSize:
    """The batch size worth forming, learned from the wall time per item of the batches that ran.

    The scheduler reports, per batch, its items and its *cycle*: the time from dispatching it to
    dispatching the next batch on the same model. That is execution plus assembling, splitting,
    answering and waiting for the next batch, so the cost of a size includes the pipeline bubbles a
    large batch leaves, not only its compute. (Under light load the cycle is mostly waiting for
    requests, which inflates the small sizes light load produces; the limit then errs large, which
    light load never fills: harmless, and re-learned by probes when load returns.)

    Batch sizes fall into buckets 1, 2, 4, ... and ``max_batch_size``; each bucket keeps an
    exponentially weighted time per item. First every bucket is tried ``min_samples`` times
    (smallest first; the sweep ends early when the queue cannot fill the bucket tried), then
    :meth:`limit` is the bucket with the lowest time per item -- the smallest of those within
    ``tolerance`` of it: past that point throughput no longer rises, only latency does. Every
    ``probe_every``-th batch tries a neighbouring bucket instead, alternately above and below, so
    the choice follows the load. Batches that ran smaller than asked update the bucket they fall in.
    """

    def __init__(
        self,
        max_batch_size: int,
        *,
        min_samples: int = 3,
        probe_every: int = 16,
        tolerance: float = 0.01,
        alpha: float = 0.25,
    ) -> None:
        self.sizes = _buckets(max_batch_size)
        self.min_samples = min_samples
        self.probe_every = probe_every
        self.tolerance = tolerance
        self.alpha = alpha
        self._cost = [0.0] * len(self.sizes)  # ns per item
        self._samples = [0] * len(self.sizes)
        self._level = 0
        self._sweep = 0  # bucket being tried during the first sweep; len(sizes) once done
        self._short = 0  # batches of the sweep that ran smaller than the bucket tried
        self._batches = 0

    @property
    def chosen(self) -> int:
        """The batch size chosen so far (the limit between probes)."""
        return self.sizes[self._level]

    def limit(self) -> int:
        """The largest batch (in items) to form next (no side effect: peek as often as needed)."""
        if self._sweep < len(self.sizes):
            return self.sizes[self._sweep]
        if (self._batches + 1) % self.probe_every:
            return self.sizes[self._level]
        step = 1 if (self._batches // self.probe_every) % 2 == 0 else -1
        return self.sizes[min(max(self._level + step, 0), len(self.sizes) - 1)]

    def estimate_ns(self, items: int) -> float:
        """Expected compute time of a batch of ``items`` (0 when its bucket is not measured yet)."""
        bucket = self._bucket(items)
        return self._cost[bucket] * items if self._samples[bucket] else 0.0

    def observe(self, items: int, cycle_ns: int, asked: int) -> None:
        """A batch of ``items`` took ``cycle_ns``; :meth:`limit` had allowed ``asked``."""
        if items <= 0:
            return
        self._batches += 1
        bucket = self._bucket(items)
        per_item = cycle_ns / items
        samples = self._samples[bucket]
        self._cost[bucket] = per_item if not samples else self._cost[bucket] + (per_item - self._cost[bucket]) * self.alpha
        self._samples[bucket] = samples + 1
        if self._sweep < len(self.sizes):
            if items < asked:
                self._short += 1  # the queue did not fill the bucket being tried
            while self._sweep < len(self.sizes) and self._samples[self._sweep] >= self.min_samples:
                self._sweep, self._short = self._sweep + 1, 0
            if self._short >= self.min_samples:
                self._sweep = len(self.sizes)  # the load cannot fill larger batches now; probes will
            if self._sweep < len(self.sizes):
                return
        elif bucket == self._level and self._batches % 8:
            return  # the chosen bucket ran again: re-choose every 8th time only (hot path)
        self._choose()

    def _bucket(self, items: int) -> int:
        sizes = self.sizes
        index = len(sizes) - 1
        while sizes[index] > items and index:
            index -= 1
        return index

    def _choose(self) -> None:
        measured = [(cost, i) for i, (cost, n) in enumerate(zip(self._cost, self._samples)) if n >= self.min_samples]
        if measured:
            bound = min(measured)[0] * (1 + self.tolerance)
            self._level = next(i for cost, i in measured if cost <= bound)

    def snapshot(self) -> dict[int, float]:
        """Bucket size -> compute time per item in microseconds, for measured buckets."""
        return {s: round(c / 1e3, 3) for s, c, n in zip(self.sizes, self._cost, self._samples) if n}
