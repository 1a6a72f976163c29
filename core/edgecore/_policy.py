"""The batching policy of :mod:`edgecore.scheduler`: which models batch, how large a batch to form,
and whether to send it now or wait for a fuller one; the adaptive batch-size limit and its learning.

Pure: no threads, no locks, no clock. Every decision takes the time (``perf_counter_ns``) as an
argument, so the policy can be driven by a test with made-up arrivals and dispatch times exactly as
the scheduler drives it with real ones.

Concurrency: none here. The scheduler calls a :class:`BatchPolicy` (and its
:class:`AdaptiveBatchSize`) only while it holds its lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from edgecore.tensor import TensorSpec

__all__ = ["AdaptiveBatchSize", "BatchPolicy", "batch_dimension"]

#: After this many dispatches that skipped the wait for a fuller batch, one waits again.
RETRY_WAIT_EVERY = 32


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

    **Start and sweep.** The first window runs under ``start`` (a limit; default: the largest limit
    up to half of ``max_batch_size``, and at least 2 when the maximum allows). Starting at 1 would
    make a fresh engine under load send its first requests one by one, at the lowest throughput of
    all, until the sweep reached the larger limits; starting half way batches from the first window
    on while bounding the first batches' latency at half the maximum's, and under light load the
    limit costs nothing, since a batch is never larger than what the queue holds. From ``start``
    every limit gets a window: upward to the maximum, then downward to 1. Then the limit is the one
    with the highest throughput -- the smallest of those within ``tolerance`` of it, since past that
    point batches only add latency (under light load every limit achieves the arrival rate, so the
    smallest wins). Every ``probe_every``-th window tries a neighbouring limit instead, alternately
    above and below, so the choice follows the load.
    """

    def __init__(
        self,
        max_batch_size: int,
        *,
        start: int | None = None,
        min_batches: int = 4,
        min_window_ns: int = 20_000_000,
        probe_every: int = 4,
        tolerance: float = 0.02,
        alpha: float = 0.5,
    ) -> None:
        self.sizes = _buckets(max_batch_size)
        if start is None:
            start = max(max_batch_size // 2, min(2, max_batch_size))
        self.min_batches = min_batches
        self.min_window_ns = min_window_ns
        self.probe_every = probe_every
        self.tolerance = tolerance
        self.alpha = alpha
        self._rate = [0.0] * len(self.sizes)  # items per ns
        self._windows = [0] * len(self.sizes)
        first = max(i for i, size in enumerate(self.sizes) if size <= max(start, 1))
        # the sweep: start, upward to the maximum, then downward to 1
        self._sweep = [*range(first, len(self.sizes)), *range(first - 1, -1, -1)]
        self._level = first  # the limit chosen
        self._trying = self._sweep.pop(0)  # the limit of the current window
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
            self._trying = self._sweep.pop(0)
            return
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
            self._level = min(i for rate, i in measured if rate >= bound)

    def snapshot(self) -> dict[int, float]:
        """Limit -> measured throughput in items per second, for measured limits."""
        return {s: round(r * 1e9, 1) for s, r, n in zip(self.sizes, self._rate, self._windows) if n}


class BatchPolicy:
    """How large a batch to form and when to send it, for one model (Triton's rules).

    * **Limit** (:meth:`limit`): ``max_batch_size``, or the adaptive limit, lowered (halved) while
      the head request's deadline would not survive the expected time of a batch that large;
      1 when the model does not batch.
    * **Send or wait** (:meth:`size`): the largest preferred size up to the limit that the queue
      can fill is sent at once; without one, a full batch (the limit) is; otherwise the head waits
      until ``max_queue_delay_ns`` after its arrival (:meth:`send_by`), then what is there goes.
      Closing sends at once. With adaptive batching, the wait is skipped while recent waits brought
      no new request (a lone closed-loop client, say): the arrivals during each wait are reported
      with :meth:`dispatched` and averaged; every ``RETRY_WAIT_EVERY``-th time a wait is tried again.
    * **Batching off** (:meth:`stop_batching`): once a batched run shows that dimension 0 is not a
      batch dimension, every request is sent alone from then on.
    """

    def __init__(
        self,
        *,
        max_batch_size: int,
        preferred_batch_sizes: Sequence[int] = (),
        max_queue_delay_ns: int = 0,
        batching: bool = True,
        adaptive: bool = False,
        adaptive_start: int | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.preferred = tuple(sorted(set(preferred_batch_sizes), reverse=True))  # largest first
        self.delay_ns = max_queue_delay_ns
        self.batching = batching and max_batch_size > 1
        if adaptive_start is None and self.preferred:
            adaptive_start = self.preferred[0]
        self.adaptive = (
            AdaptiveBatchSize(max_batch_size, start=adaptive_start) if self.batching and adaptive else None
        )
        self.wait_yield = 1.0  # exponentially weighted arrivals during a wait for a fuller batch
        self.skipped_waits = 0

    @classmethod
    def for_model(cls, config: Any, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> tuple[BatchPolicy, str | None]:
        """The policy an ``EngineConfig`` asks for on a model with these specs, and why the model is
        not batched (None when it is, or when ``max_batch_size`` is 1)."""
        why = batch_dimension(inputs, outputs) if config.max_batch_size > 1 else None
        policy = cls(
            max_batch_size=config.max_batch_size,
            preferred_batch_sizes=config.preferred_batch_sizes,
            max_queue_delay_ns=config.max_queue_delay_us * 1000,
            batching=why is None,
            adaptive=config.adaptive_batching,
        )
        return policy, why

    def stop_batching(self) -> None:
        """Send every request alone from now on (the model's dimension 0 is not a batch dimension)."""
        self.batching = False
        self.adaptive = None

    def limit(self, deadline: int, now: int) -> int:
        """The largest batch (items) to form for a head request with ``deadline`` (0 = none)."""
        if not self.batching:
            return 1
        adaptive = self.adaptive
        if adaptive is None:
            return self.max_batch_size
        limit = adaptive.limit()
        if deadline:
            left = deadline - now
            while limit > 1 and adaptive.estimate_ns(limit) > left:
                limit //= 2
        return limit

    def size(self, limit: int, available: int, arrival: int, now: int, *, waiting: bool, closing: bool) -> int:
        """Items to send now, given the ``limit``, the ``available`` items of the head's shape and the
        head's ``arrival``; 0 to wait for more (until :meth:`send_by`). ``waiting``: the caller is
        already waiting for a fuller batch (a skipped wait is only counted when it is not)."""
        if limit <= 1:
            return limit
        for size in self.preferred:
            if size <= limit and size <= available:
                return size
        if available >= limit or closing or not self.delay_ns or now - arrival >= self.delay_ns:
            return limit
        if self.adaptive is not None and not waiting and self.wait_yield < 0.5:
            self.skipped_waits += 1
            if self.skipped_waits % RETRY_WAIT_EVERY:
                return limit  # recent waits brought nothing: do not make this request wait
        return 0

    def send_by(self, arrival: int) -> int:
        """When a head that arrived at ``arrival`` is sent, however full its batch."""
        return arrival + self.delay_ns

    def dispatched(self, items: int, now: int, arrivals_while_waiting: int = -1) -> None:
        """A batch of ``items`` went at ``now``; ``arrivals_while_waiting``: requests that arrived
        while it waited for a fuller batch (-1: it did not wait)."""
        if arrivals_while_waiting >= 0:
            self.wait_yield += (arrivals_while_waiting - self.wait_yield) * 0.25
        if self.adaptive is not None:
            self.adaptive.dispatched(items, now)
