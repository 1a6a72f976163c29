"""Dynamic batching: a request queue in front of one or more compiled models, in Triton's vocabulary.

:meth:`Scheduler.submit` takes feeds already checked against the model and returns a
:class:`concurrent.futures.Future`; worker threads take batches of compatible requests off the
queue, run them, and resolve each future with that request's slice of the outputs.

Semantics
---------
* **Priorities.** ``priority`` is ``0 .. priority_levels - 1``; 0 is served first. A batch is led by
  the oldest request of the highest non-empty level and filled with compatible requests of that
  level, then of lower ones.
* **Compatible** requests have the same shapes in every input except dimension 0, the batch
  dimension (a request may carry several items along it). A model whose inputs do not all start
  with one dynamic dimension, or whose outputs start with a fixed one, is never batched: each
  request runs alone. A batched run whose outputs do not have the batch's size along dimension 0
  turns batching off for the model and its requests are run again one by one.
* **Batch size** (in items, Triton's rules). With ``preferred_batch_sizes``, the largest preferred
  size the queue can fill is sent at once. Without, a batch of ``max_batch_size`` (or the adaptive
  limit) is sent as soon as the queue holds one. Otherwise the worker waits until
  ``max_queue_delay_us`` after the oldest request arrived, then sends what is there. Closing
  (``drain=True``) sends at once.
* **Adaptive batching** (``adaptive_batching``): the limit on the batch size is learned online by
  :class:`~edgecore._batching.AdaptiveBatchSize` (the limit past which throughput stops rising,
  measured over windows of batches), and it is lowered further when the oldest request's deadline
  would not survive the expected time of a larger batch. The wait for a fuller batch is skipped while recent waits
  brought no new request (a lone closed-loop client, say); every 32nd time it is tried again.
* **Timeouts.** ``timeout_ms`` (default ``default_timeout_ms``; 0 = none) bounds the time a request
  may wait in the queue. A request still queued past it is answered with
  :class:`~edgecore.errors.RequestTimeoutError` and never runs: on time by an idle worker, and
  otherwise as soon as a worker finishes its batch. A request that started running is answered
  with its outputs.
* **Bounded queue.** ``max_queue_size`` (0 = unbounded) requests may wait; past it ``submit`` raises
  :class:`~edgecore.errors.QueueFullError` at once and the request is not accepted.
* **Errors.** A batched run that raises is retried one request at a time, so that only the requests
  that fail alone fail. Every accepted future resolves: with its outputs, a timeout, the model's
  error, :class:`~edgecore.errors.EngineClosedError` (``close(drain=False)``), or, should the
  scheduler itself fail, that error. A cancelled future is dropped when its batch is formed.
* **Memory.** Batched inputs are concatenated into buffers from the engine's pool, released when
  the run returns. Each request's outputs are views into the batch's output buffers; a view keeps
  its whole buffer out of the pool for as long as the caller holds it (numpy views do). Inputs are
  read when the batch runs, not at submit: do not modify a fed array until its future resolves.

Concurrency
-----------
* **Caller threads** (``submit``) append their request to the queue under ``_lock``, take one idle
  worker whose model is free off ``_idle`` if there is one, and wake it after leaving the lock
  (each worker sleeps on its own pre-allocated lock used as a binary semaphore: cheaper than a
  Condition, and the woken worker does not wake into a held lock).
* **Helping callers.** A caller blocked in ``future.result()`` (no timeout) whose request is still
  queued may take its batch itself, exactly as a worker would (same rules), when some instance's
  model is free: it marks that instance in use, runs the batch in its own thread and resolves the
  batch's futures, then frees the instance and wakes its worker if requests wait. This saves the
  two thread handoffs per request when the engine is lightly loaded.
* **Worker threads**, one per compiled model (``instances``), named ``edgecore-worker-<i>``. Each
  serves its model; ``_in_use[i]`` says who runs model ``i`` now (its worker or a helping caller:
  never two at once), and a worker whose model is lent out sleeps until the helper wakes it.
  Backends keep per-thread state (e.g. ORT IOBinding) per calling thread. Under ``_lock`` a worker
  takes expired requests and the next batch off the queue; outside it, it answers the expired,
  assembles the batch in pool buffers, runs it, splits the outputs and resolves the futures. Future
  callbacks (asyncio's included) therefore run in worker threads or helping callers' threads, never
  under the lock.
* **close** (any thread) sets ``_closing`` under ``_lock``, takes the queued requests when not
  draining, wakes every worker and joins them (except itself, when called from a callback); workers
  leave once the queue is empty; close then waits for helping callers still running a batch.
  Whatever a failed worker left queued is answered after the join.
* **Locks.** ``_lock`` guards the queues, their counters, ``_idle``, ``_in_use``, ``_helping`` and
  the flags. The statistics recorder and the memory pool have their own locks, taken after
  ``_lock`` or without it, never before it. Busy time of instance ``i`` is written by whoever holds
  ``_in_use[i]``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgecore._batching import AdaptiveBatchSize, Request, RequestQueue, batch_dimension
from edgecore.errors import ConfigurationError, EngineClosedError, QueueFullError, RequestTimeoutError
from edgecore.profiling.profiler import REQUEST_IDS, get_profiler, next_batch_id

if TYPE_CHECKING:
    from edgecore.backend import CompiledModel
    from edgecore.config import EngineConfig
    from edgecore.memory import MemoryPool
    from edgecore.stats import StatsRecorder

logger = logging.getLogger(__name__)

__all__ = ["Scheduler"]

_now = time.perf_counter_ns
_InvalidState = concurrent.futures.InvalidStateError
_PENDING = "PENDING"  # concurrent.futures' state name for a future nobody has run or cancelled


class _Future(concurrent.futures.Future):
    """A Future whose blocking ``result()`` may run its own request's batch in the calling thread.

    It does so when the request is still queued, leads the queue (its shapes), a model instance is
    free and the batching rules say "send now": a lightly loaded caller then pays no thread handoff.
    """

    def __init__(self, scheduler: Scheduler, key: Any, woken: bool) -> None:
        super().__init__()
        self._scheduler = scheduler
        self._key = key
        self._taken = False  # off the queue (taken into a batch, expired, or failed at close)
        self._woken = woken  # submit woke a worker for it

    def result(self, timeout: float | None = None) -> Any:
        scheduler = self._scheduler  # None once off the queue: a kept future does not keep the models
        if scheduler is not None and not self._taken and self._state == _PENDING:
            if timeout is None:
                scheduler._help(self)
            if not self._woken and not self._taken:
                scheduler._wake()  # the caller could not run it: a worker must
        return super().result(timeout)


def _off(requests: list[Request]) -> list[Request]:
    """Mark ``requests`` as off the queue for their futures (no helping, no scheduler reference)."""
    for request in requests:
        request.future._taken, request.future._scheduler = True, None
    return requests


def _answer(future: _Future, exc: BaseException) -> bool:
    """Fail ``future`` unless it is resolved or cancelled already; True when this call failed it."""
    try:
        future.set_exception(exc)
    except _InvalidState:
        return False
    return True


class Scheduler:
    """The queue and workers behind ``Engine.submit``; see the module docstring for the rules."""

    def __init__(
        self,
        models: Sequence[CompiledModel],
        config: EngineConfig,
        *,
        stats: StatsRecorder,
        pool: MemoryPool | None = None,
    ) -> None:
        if not models:
            raise ConfigurationError("a Scheduler needs at least one compiled model")
        self._models = tuple(models)
        self._stats = stats
        self._pool = pool
        self.max_batch_size = config.max_batch_size
        self._preferred = tuple(reversed(config.preferred_batch_sizes))  # largest first
        self._delay_ns = config.max_queue_delay_us * 1000
        self.priority_levels = config.priority_levels
        self._default_timeout_ns = int(config.default_timeout_ms * 1e6)
        self._max_queue = config.max_queue_size
        why = batch_dimension(models[0].inputs, models[0].outputs) if config.max_batch_size > 1 else "max_batch_size is 1"
        self.batching = why is None
        if why and config.max_batch_size > 1:
            logger.info("requests to this model are not batched: %s", why)
        self.adaptive = AdaptiveBatchSize(config.max_batch_size) if self.batching and config.adaptive_batching else None
        self._out_names = tuple(spec.name for spec in models[0].outputs)
        self._profiler = get_profiler()

        self._lock = threading.Lock()
        self._wakes = [threading.Lock() for _ in self._models]  # held = no signal pending
        for wake in self._wakes:
            wake.acquire()
        self._idle: list[int] = []  # workers asleep on their wake lock
        self._in_use = [0] * len(self._models)  # model i runs a batch: the running thread's ident, or 0
        self._helping: set[int] = set()  # threads of callers running a batch
        self._queue = RequestQueue(config.priority_levels)
        self._arrivals = 0  # requests accepted so far
        self._wait_yield = 1.0  # exponentially weighted arrivals during a wait for a fuller batch
        self._skipped_waits = 0
        self._closing = False
        self._ids = REQUEST_IDS  # process-wide, so that requests of different engines differ in a trace
        self.cancelled = 0

        self._started = _now()
        self._busy_ns = [0] * len(self._models)
        self._workers = [
            threading.Thread(target=self._work, args=(i,), name=f"edgecore-worker-{i}", daemon=True)
            for i in range(len(self._models))
        ]
        for worker in self._workers:
            worker.start()

    # -- callers ------------------------------------------------------------------------------------

    def submit(
        self, feeds: dict[str, np.ndarray], *, priority: int = 0, timeout_ms: float | None = None, wake: bool = True
    ) -> _Future:
        """Queue checked ``feeds``; the future resolves to the outputs by name.

        ``wake=False`` leaves the workers asleep: only for a caller that calls ``result()`` at once
        (``Engine.run``), which runs the request itself or wakes a worker.

        Raises at once, accepting nothing: :class:`QueueFullError` when ``max_queue_size`` requests
        wait, :class:`EngineClosedError` once closing, :class:`ConfigurationError` for a priority
        outside ``0..priority_levels-1`` or a negative timeout.
        """
        if not (isinstance(priority, int) and 0 <= priority < self.priority_levels):
            raise ConfigurationError(
                f"priority must be an int in 0..{self.priority_levels - 1} (priority_levels="
                f"{self.priority_levels}; 0 is served first), got {priority!r}"
            )
        if timeout_ms is None:
            timeout_ns = self._default_timeout_ns
        elif timeout_ms >= 0:
            timeout_ns = int(timeout_ms * 1e6)
        else:
            raise ConfigurationError(f"timeout_ms must be >= 0 (0 = no timeout), got {timeout_ms!r}")
        if self.batching:
            key = tuple([array.shape[1:] for array in feeds.values()])
            items = next(iter(feeds.values())).shape[0]
        else:
            key, items = None, 1
        future = _Future(self, key, wake)
        now = _now()
        request = Request(feeds, future, key, items, now + timeout_ns if timeout_ns else 0, now, next(self._ids))
        with self._lock:
            if self._closing:
                raise EngineClosedError("the engine is closing or closed; it accepts no more requests")
            if self._max_queue and self._queue.queued >= self._max_queue:
                self._stats.record_failure("rejected")
                raise QueueFullError(
                    f"the queue holds max_queue_size={self._max_queue} requests; retry later, or raise "
                    f"max_queue_size or the engine's throughput (instances, max_batch_size)"
                )
            self._queue.push(request, priority)
            self._arrivals += 1
            waker = self._wake_one() if wake and self._idle else None
        if waker is not None:
            waker.release()
        return future

    @property
    def queued(self) -> int:
        """Requests waiting (not running)."""
        return self._queue.queued

    def utilization(self) -> tuple[float, ...]:
        """Per instance, the share of wall time since start spent assembling, running and splitting."""
        elapsed = max(_now() - self._started, 1)
        return tuple(min(busy / elapsed, 1.0) for busy in self._busy_ns)

    def close(self, drain: bool = True) -> None:
        """Stop accepting; answer every queued request (run it, or fail it when ``drain`` is False).

        Returns once every accepted request is answered and the workers have left.
        """
        with self._lock:
            self._closing = True
            dropped = [] if drain else self._take_all()
            idle, self._idle = self._idle, []
        for index in idle:
            self._wakes[index].release()
        self._fail_closed(dropped)
        current = threading.current_thread()
        for worker in self._workers:
            if worker is not current:
                worker.join()
        me = threading.get_ident()
        while True:
            with self._lock:
                if not self._helping - {me}:
                    stranded = self._take_all()
                    break
            time.sleep(0.0005)
        if stranded:  # only if a worker died: never leave a future pending
            logger.error("%d queued requests were left by failed workers; failing them", len(stranded))
            self._fail_closed(stranded)

    def _fail_closed(self, requests: list[Request]) -> None:
        for request in requests:
            if _answer(request.future, EngineClosedError("the engine was closed before this request ran")):
                self._stats.record_failure("failed")

    # -- the queue (called with _lock held) -----------------------------------------------------------

    def _sleep(self, index: int, timeout_s: float) -> None:
        """Release ``_lock`` until woken or ``timeout_s`` (-1: forever) passes; return with it held."""
        wake = self._wakes[index]
        self._idle.append(index)
        self._lock.release()
        try:
            woken = wake.acquire(True, timeout_s)
        finally:
            self._lock.acquire()
        if not woken:
            try:
                self._idle.remove(index)
            except ValueError:  # a caller took this worker off _idle just now: take its signal
                self._lock.release()
                try:
                    wake.acquire()
                finally:
                    self._lock.acquire()

    def _take_all(self) -> list[Request]:
        return _off(self._queue.take_all())

    def _take(self, key: Any, size: int) -> list[Request]:
        return _off(self._queue.take(key, size))

    def _wake(self) -> None:
        """Wake one idle worker whose model is free, if requests wait."""
        with self._lock:
            waker = self._wake_one() if self._queue.queued and self._idle else None
        if waker is not None:
            waker.release()

    def _wake_one(self) -> threading.Lock | None:
        """The wake lock of an idle worker whose model is free, taken off ``_idle`` (release it after
        leaving ``_lock``); None if there is none."""
        idle, in_use = self._idle, self._in_use
        for position in range(len(idle) - 1, -1, -1):
            if not in_use[idle[position]]:
                return self._wakes[idle.pop(position)]
        return None

    def _size(self, head: Request, limit: int, now: int, waiting: bool) -> int:
        """Items to send now for ``head``'s key, or 0 to wait for more (``waiting``: already are)."""
        if not self.batching or limit <= 1:
            return limit
        available = self._queue.items[head.key]
        for size in self._preferred:
            if size <= limit and size <= available:
                return size
        if available >= limit or self._closing or not self._delay_ns:
            return limit
        waited = now - head.arrival
        if waited >= self._delay_ns:
            return limit
        if self.adaptive is not None and not waiting and self._wait_yield < 0.5:
            self._skipped_waits += 1
            if self._skipped_waits % 32:
                return limit  # recent waits brought nothing: do not make this request wait
        return 0

    def _limit(self, head: Request, now: int) -> int:
        """The largest batch to form for ``head`` (adaptive limit and its deadline's bound)."""
        adaptive = self.adaptive
        if adaptive is None:
            return self.max_batch_size if self.batching else 1
        limit = adaptive.limit()
        if head.deadline:
            left = head.deadline - now
            while limit > 1 and adaptive.estimate_ns(limit) > left:
                limit //= 2
        return limit

    def _next(self, index: int, me: int) -> tuple[list[Request], list[Request]] | None:
        """Block until there is work: (batch, expired); None once closing with nothing queued.

        Frees the worker's model if it held it (thread ``me``); a returned batch holds it again.
        """
        expired: list[Request] = []
        wake = None
        mark = -1  # arrivals counted when this worker began waiting for a fuller batch
        with self._lock:
            if self._in_use[index] == me:
                self._in_use[index] = 0
            while True:
                if not self._queue.queued:
                    if self._closing:
                        return None
                    self._sleep(index, -1)
                    continue
                now = _now()
                if now >= self._queue.next_deadline:
                    _off(self._queue.expire(now, expired))
                    if expired:
                        return [], expired
                    if not self._queue.queued:
                        continue
                head = self._queue.head()
                limit = self._limit(head, now)
                size = self._size(head, limit, now, mark >= 0)
                if size and self._in_use[index]:  # a helping caller runs this model: hand the work on
                    other = self._wake_one()
                    if other is not None:
                        other.release()
                    self._sleep(index, -1)  # the helper wakes this worker when it is done
                    continue
                if size:
                    batch = self._take(head.key, size)
                    self._in_use[index] = me
                    if self.adaptive is not None:
                        self._learn(batch, mark)
                    if self._queue.queued:
                        wake = self._wake_one()  # another idle worker may take the rest
                    break
                if mark < 0:
                    mark = self._arrivals
                until = min(head.arrival + self._delay_ns, self._queue.next_deadline)
                self._sleep(index, (until - now) / 1e9)
        if wake is not None:
            wake.release()
        return batch, expired

    def _help(self, future: _Future) -> None:
        """Run ``future``'s batch in the calling thread if the rules send it now and a model is free."""
        with self._lock:
            if future._taken or self._closing or not self._queue.queued:
                return
            now = _now()
            if now >= self._queue.next_deadline:
                return  # expiry first: a worker does it
            try:
                index = self._in_use.index(0)
            except ValueError:
                return
            head = self._queue.head()
            if head.key != future._key:
                return
            limit = self._limit(head, now)
            size = self._size(head, limit, now, False)
            if not size:
                return
            batch = self._take(head.key, size)
            if self.adaptive is not None:
                self._learn(batch, -1)
            me = threading.get_ident()
            self._in_use[index] = me
            self._helping.add(me)
            wake = self._wake_one() if self._queue.queued else None
        if wake is not None:
            wake.release()
        started = _now()
        try:
            self._execute(self._models[index], batch)
        except BaseException as exc:  # never leave a future pending
            logger.exception("scheduler failed while running a batch")
            for request in batch:
                _answer(request.future, exc)
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt and the like belong to the calling thread
        finally:
            self._busy_ns[index] += _now() - started
            with self._lock:
                self._in_use[index] = 0
                self._helping.discard(me)
                wake = None
                if self._queue.queued and index in self._idle:  # its worker may have slept while lent out
                    self._idle.remove(index)
                    wake = self._wakes[index]
            if wake is not None:
                wake.release()

    def _learn(self, batch: list[Request], mark: int) -> None:
        """Report a dispatch to the adaptive limit, and whether waiting for a fuller batch paid."""
        if mark >= 0:
            self._wait_yield += (self._arrivals - mark - self._wait_yield) * 0.25
        self.adaptive.dispatched(sum([request.items for request in batch]), _now())

    # -- workers --------------------------------------------------------------------------------------

    def _work(self, index: int) -> None:
        model = self._models[index]
        busy = self._busy_ns
        me = threading.get_ident()
        while True:
            try:
                work = self._next(index, me)
            except BaseException as exc:  # a bug in batch selection: fail what is queued, keep serving
                logger.exception("scheduler failed to form a batch; failing the queued requests")
                with self._lock:
                    queued = self._take_all()
                for request in queued:
                    _answer(request.future, exc)
                continue
            if work is None:
                return
            batch, expired = work
            started = _now()
            try:
                if expired:
                    self._time_out(expired, started)
                if batch:
                    self._execute(model, batch)
            except BaseException as exc:  # never leave a future pending
                logger.exception("scheduler failed while running a batch")
                for request in batch + expired:
                    _answer(request.future, exc)
            busy[index] += _now() - started

    def _time_out(self, expired: list[Request], now: int) -> None:
        for request in expired:
            waited = (now - request.arrival) / 1e6
            allowed = (request.deadline - request.arrival) / 1e6
            error = RequestTimeoutError(
                f"request waited {waited:.2f} ms in the queue, past its timeout of {allowed:g} ms; it did not run"
            )
            if _answer(request.future, error):
                self._stats.record_failure("timed_out")

    def _execute(self, model: CompiledModel, batch: list[Request]) -> None:
        if len(batch) == 1:
            if batch[0].future.set_running_or_notify_cancel():
                self._run_alone(model, batch[0])
            else:
                self.cancelled += 1
            return
        live = [request for request in batch if request.future.set_running_or_notify_cancel()]
        if len(live) != len(batch):
            self.cancelled += len(batch) - len(live)
        if not live:
            return
        if len(live) == 1:
            self._run_alone(model, live[0])
            return
        profiler = self._profiler
        items = sum([request.items for request in live])
        assembled = _now()
        try:
            feeds = self._assemble(live, items)
            started = _now()
            outputs = model.execute(feeds)
            finished = _now()
            del feeds
        except Exception as exc:
            logger.debug("batch of %d requests failed (%r); running them one by one", len(live), exc)
            for request in live:
                self._run_alone(model, request)
            return
        arrays = [outputs[name] for name in self._out_names]
        if any(array.ndim == 0 or array.shape[0] != items for array in arrays):
            logger.warning(
                "a batch of %d items gave outputs of shapes %s: the model's dimension 0 is not a batch "
                "dimension; requests to it are no longer batched",
                items, [a.shape for a in arrays],
            )
            self.batching = False
            self.adaptive = None
            for request in live:
                self._run_alone(model, request)
            return
        names = self._out_names
        offset = 0
        for request in live:
            end = offset + request.items
            request.future.set_result({name: array[offset:end] for name, array in zip(names, arrays)})
            offset = end
        resolved = _now()
        self._stats.record_batch(
            [resolved - request.arrival for request in live],
            sum([assembled - request.arrival for request in live]),
            items,
            finished - started,
        )
        if profiler.active:
            self._trace(live, items, assembled, started, finished, resolved)

    def _assemble(self, batch: list[Request], items: int) -> dict[str, np.ndarray]:
        """The batch's inputs, concatenated along dimension 0 into pool buffers."""
        pool = self._pool
        feeds = {}
        for name, first in batch[0].feeds.items():
            shape = (items, *first.shape[1:])
            buffer = pool.acquire(shape, first.dtype) if pool is not None else np.empty(shape, first.dtype)
            np.concatenate([request.feeds[name] for request in batch], axis=0, out=buffer)
            feeds[name] = buffer
        return feeds

    def _run_alone(self, model: CompiledModel, request: Request) -> None:
        started = _now()
        try:
            outputs = model.execute(request.feeds)
        except Exception as exc:
            request.future.set_exception(exc)
            self._stats.record_failure("failed")
            return
        finished = _now()
        request.future.set_result(outputs)
        resolved = _now()
        self._stats.record_batch([resolved - request.arrival], started - request.arrival, request.items, finished - started)
        if self._profiler.active:
            self._trace([request], request.items, started, started, finished, resolved)

    def _trace(self, batch: list[Request], items: int, assembled: int, started: int, finished: int, resolved: int) -> None:
        """Profiler spans of one batch (only while a profiling session records); every span of the
        batch shares one args dict: batch id and size (items), backend, the requests' ids."""
        record = self._profiler.record
        args = {
            "batch_id": next_batch_id(), "batch_size": items, "requests": len(batch),
            "backend": self._models[0].backend, "request_ids": [request.rid for request in batch],
        }
        lead = batch[0].rid
        if started > assembled:
            record("batch_assemble", assembled, started, request_id=lead, args=args)
        record("backend_execute", started, finished, request_id=lead, args=args)
        record("output_split", finished, resolved, request_id=lead, args=args)
        for request in batch:
            record("queue_wait", request.arrival, assembled, request_id=request.rid, args=args)
            record("inference_total", request.arrival, resolved, request_id=request.rid, args=args)
