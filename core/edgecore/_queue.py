"""The request queue of :mod:`edgecore.scheduler`: requests by priority level and shape, in arrival
order, with the counts and the earliest deadline the batching policy needs.

Concurrency: nothing here locks. :class:`RequestQueue` is used only under the scheduler's lock; a
:class:`Request` is written once, before it is queued.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import Future

    import numpy as np

__all__ = ["NEVER", "Request", "RequestQueue"]

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
