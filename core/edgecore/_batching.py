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
    """The batch-size limit worth using, learned from the throughput each limit achieves.

    Limits are 1, 2, 4, ... and ``max_batch_size``. The scheduler reports every dispatch
    (:meth:`dispatched`); dispatches are grouped in *windows* of at least ``min_batches`` batches
    and ``min_window_ns``, all under one limit, and a window's throughput is the items of its
    batches over the time from its first dispatch to its last (everything counts: execution,
    assembling, answering, waiting for a batch to fill, and the bubble a large batch leaves while
    its clients send their next requests). Each limit keeps an exponentially weighted throughput.

    First every limit gets a window, smallest first; then the limit is the one with the highest
    throughput -- the smallest of those within ``tolerance`` of it, since past that point batches
    only add latency (under light load every limit achieves the arrival rate, so the smallest wins).
    Every ``probe_every``-th window tries a neighbouring limit instead, alternately above and below,
    so the choice follows the load.
    """

    def __init__(
        self,
        max_batch_size: int,
        *,
        min_batches: int = 4,
        min_window_ns: int = 20_000_000,
        probe_every: int = 4,
        tolerance: float = 0.02,
        alpha: float = 0.5,
    ) -> None:
        self.sizes = _buckets(max_batch_size)
        self.min_batches = min_batches
        self.min_window_ns = min_window_ns
        self.probe_every = probe_every
        self.tolerance = tolerance
        self.alpha = alpha
        self._rate = [0.0] * len(self.sizes)  # items per ns
        self._windows = [0] * len(self.sizes)
        self._level = 0  # the limit chosen
        self._trying = 0  # the limit of the current window
        self._sweep = True
        self._done = 0  # windows completed since the sweep
        self._start = 0  # the current window: first dispatch time, items before the last, batches
        self._items = 0
        self._batches = 0
        self._pending = 0  # items of the last dispatch (counted once a later dispatch closes its span)

    @property
    def chosen(self) -> int:
        """The limit chosen so far (the one used between probes)."""
        return self.sizes[self._level]

    def limit(self) -> int:
        """The largest batch (in items) to form next (no side effect)."""
        return self.sizes[self._trying]

    def estimate_ns(self, items: int) -> float:
        """Expected time per batch of ``items`` at the current limit's throughput (0 if unknown)."""
        rate = self._rate[self._trying]
        return items / rate if rate else 0.0

    def dispatched(self, items: int, now: int) -> None:
        """A batch of ``items`` was dispatched at ``now`` (perf_counter_ns) under :meth:`limit`."""
        if not self._batches:
            self._start, self._items, self._batches, self._pending = now, 0, 1, items
            return
        self._items += self._pending
        self._pending = items
        self._batches += 1
        elapsed = now - self._start
        if self._batches <= self.min_batches or elapsed < self.min_window_ns:
            return
        level = self._trying
        rate = self._items / elapsed
        self._rate[level] = rate if not self._windows[level] else self._rate[level] + (rate - self._rate[level]) * self.alpha
        self._windows[level] += 1
        self._next_window()
        self._start, self._items, self._batches, self._pending = now, 0, 1, items

    def _next_window(self) -> None:
        if self._sweep:
            if self._trying + 1 < len(self.sizes):
                self._trying += 1
                return
            self._sweep = False
        self._choose()
        self._done += 1
        self._trying = self._level
        if self._done % self.probe_every == 0:
            step = 1 if (self._done // self.probe_every) % 2 else -1
            self._trying = min(max(self._level + step, 0), len(self.sizes) - 1)

    def _choose(self) -> None:
        measured = [(rate, i) for i, (rate, n) in enumerate(zip(self._rate, self._windows)) if n]
        if measured:
            bound = max(measured)[0] * (1 - self.tolerance)
            self._level = next(i for rate, i in measured if rate >= bound)

    def snapshot(self) -> dict[int, float]:
        """Limit -> measured throughput in items per second, for measured limits."""
        return {s: round(r * 1e9, 1) for s, r, n in zip(self.sizes, self._rate, self._windows) if n}
