"""Dynamic batching: a request queue in front of one or more compiled models, in Triton's vocabulary.

:meth:`Scheduler.submit` takes feeds already checked against the model and returns a
:class:`concurrent.futures.Future`; worker threads take batches of compatible requests off the
queue, run them, and resolve each future with that request's slice of the outputs. What to send and
when is decided by a :class:`~edgecore._policy.BatchPolicy` (pure, tested alone); this module owns
the threads, the lock and the futures.

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
* **Batch size** (in items; :class:`~edgecore._policy.BatchPolicy`). With ``preferred_batch_sizes``,
  the largest preferred size the queue can fill is sent at once. Without, a batch of
  ``max_batch_size`` (or the adaptive limit) is sent as soon as the queue holds one. Otherwise the
  head waits until ``max_queue_delay_us`` after it arrived, then what is there is sent. Closing
  (``drain=True``) sends at once.
* **Adaptive batching** (``adaptive_batching``): the limit is learned online by
  :class:`~edgecore._policy.AdaptiveBatchSize`, starting half way up (so that a fresh engine under
  load batches at once) and sweeping every limit; it is lowered further when the head's deadline
  would not survive the expected time of a larger batch, and the wait for a fuller batch is skipped
  while recent waits brought no new request.
* **Timeouts** (``timeout_ms``, default ``default_timeout_ms``; 0 = none) cover the whole request. A
  request still queued at its deadline is answered with :class:`~edgecore.errors.RequestTimeoutError`
  and never runs: on time by an idle worker or by its caller waiting in ``result()``, and otherwise
  as soon as a worker finishes its batch. A running request carries its deadline into
  ``CompiledModel.execute`` (a batch: the latest deadline of its requests, none if one has none);
  a backend that can stop its runtime answers ``RequestTimeoutError`` then, one that cannot returns
  the outputs late.
* **Bounded queue.** ``max_queue_size`` (0 = unbounded) requests may wait; past it ``submit`` raises
  :class:`~edgecore.errors.QueueFullError` at once and the request is not accepted.
* **Errors.** A batched run that fails (its assembly included, e.g.
  :class:`~edgecore.errors.MemoryBudgetExceeded`) is retried one request at a time, once the batch's
  buffers are released, so that only the requests that fail alone fail; a batch that timed out is
  not retried (:mod:`edgecore._runner`). A failed request's frames let go of it before they return,
  so that its failure's traceback makes no reference cycle through its future.
* **Every accepted future resolves**: with its outputs, a timeout, the model's error,
  :class:`~edgecore.errors.EngineClosedError` (``close(drain=False)``), or an
  :class:`~edgecore.errors.EdgecoreError` saying the scheduler failed. Whoever takes requests off
  the queue answers them inside one ``try``/``finally`` that fails whatever is still unanswered. A
  caller blocked in ``result()`` without a timeout (``Engine.run``) also wakes every
  ``CHECK_INTERVAL_S`` (or at its deadline) to check that its request is queued with a live worker
  or being run by a thread that has not finished its batch, and fails it otherwise. A cancelled
  future is dropped when its batch is formed and counted in :attr:`Scheduler.cancelled`.
* **Memory.** Batched inputs are concatenated into buffers from the engine's pool, released when
  the run returns. Each request's outputs are views into the batch's output buffers; a view keeps
  its whole buffer out of the pool for as long as the caller holds it (numpy views do). Inputs are
  read when the batch runs, not at submit: do not modify a fed array until its future resolves.

Concurrency
-----------
* **Caller threads** (``submit``) append their request to the queue under ``_lock``, take one idle
  worker whose model is free off ``_idle`` if there is one, and wake it after leaving the lock
  (each worker sleeps on its own pre-allocated lock used as a binary semaphore).
* **Helping callers.** A caller blocked in ``future.result()`` (no timeout) whose request is still
  queued may take its batch itself, exactly as a worker would (same policy), when some instance's
  model is free: it marks that instance in use, runs the batch in its own thread and resolves the
  batch's futures, then frees the instance and wakes its worker if requests wait.
* **Worker threads**, one per compiled model (``instances``), named ``edgecore-worker-<i>``.
  ``_in_use[i]`` says who runs model ``i`` now (its worker or a helping caller, never two at once);
  a worker whose model is lent out sleeps until the helper wakes it. Under ``_lock`` a worker takes
  expired requests and the next batch off the queue; outside it, it answers the expired, assembles
  the batch in pool buffers, runs it, splits the outputs and resolves the futures. Futures are never
  resolved under ``_lock``, so their callbacks (asyncio's included) may call back into the engine.
* **close** (any thread) sets ``_closing`` under ``_lock``, takes the queued requests when not
  draining, wakes every worker and joins them (except itself, when called from a callback); workers
  leave once the queue is empty; close then waits for helping callers still running a batch.
* **Callbacks** of a future run on the thread that ran its batch, which still holds that model
  instance: one that waits for another result without a timeout waits for an instance it holds
  itself; when it holds every instance, its wait fails with an ``EdgecoreError`` after one check.
* **Locks.** ``_lock`` guards the queue, the policy (batching on/off, adaptive limit, waits),
  ``_idle``, ``_in_use``, ``_helping``, ``_arrivals``, ``cancelled``, the token set ``_live`` and the
  flags; it is never held while a model runs, a future resolves, or the statistics recorder or the
  memory pool (their own locks) is called. Nothing that the garbage collector may run (weakref
  callbacks, ``__del__``) takes ``_lock``. Busy time of instance ``i`` is written by whoever holds
  ``_in_use[i]``; tokens are removed from ``_live`` (a set: atomic) after their batch is settled.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgecore._policy import BatchPolicy
from edgecore._queue import Request, RequestQueue
from edgecore._runner import BatchRunner, answer
from edgecore.errors import ConfigurationError, EdgecoreError, EngineClosedError, QueueFullError
from edgecore.profiling.profiler import REQUEST_IDS

if TYPE_CHECKING:
    from edgecore.backend import CompiledModel
    from edgecore.memory import MemoryPool
    from edgecore.stats import StatsRecorder

logger = logging.getLogger(__name__)

__all__ = ["Scheduler", "CHECK_INTERVAL_S"]

#: How often a caller blocked in ``result()`` without a timeout checks that its request is alive.
CHECK_INTERVAL_S = 1.0

_now = time.perf_counter_ns
_PENDING, _FINISHED = "PENDING", "FINISHED"  # concurrent.futures' state names
_UNRESOLVED = ("PENDING", "RUNNING")


class _Future(concurrent.futures.Future):
    """A Future whose blocking ``result()`` may run its own request's batch in the calling thread,
    and that never waits forever on a request nobody will answer (see the module docstring)."""

    _taken = False  # off the queue (into a batch, expired, or dropped at close)
    _token = 0  # the batch that took it; in scheduler._live until that batch is settled

    def __init__(self, scheduler: Scheduler, key: Any, deadline: int, woken: bool) -> None:
        super().__init__()
        self._scheduler: Scheduler | None = scheduler  # None once settled: a kept future keeps no model
        self._key = key
        self._deadline = deadline
        self._woken = woken  # submit woke a worker for it

    def result(self, timeout: float | None = None) -> Any:
        scheduler = self._scheduler
        if timeout is None and scheduler is not None and not self._taken and self._state == _PENDING:
            scheduler._help(self)
            if self._state == _FINISHED and self._exception is None:
                return self._result  # ran in this thread (FINISHED is final: no lock needed to read it)
        try:
            return self._wait(scheduler, timeout)
        finally:
            self = scheduler = None  # a raised exception's traceback holds this frame: no cycle

    def _wait(self, scheduler: Scheduler | None, timeout: float | None) -> Any:
        try:
            if timeout is not None or scheduler is None:
                if scheduler is not None and not self._taken and not self._woken and self._state == _PENDING:
                    scheduler._wake()  # the caller will not run it: a worker must
                return super().result(timeout)
            while True:
                if not self._taken and self._state == _PENDING:
                    scheduler._help(self)
                    if not self._woken and not self._taken:
                        scheduler._wake()
                try:
                    return super().result(scheduler._check_interval(self))
                except TimeoutError:
                    if self._state not in _UNRESOLVED:
                        return super().result(0)  # resolved meanwhile (or its answer is a TimeoutError)
                scheduler._check(self)
        finally:
            self = scheduler = None  # as in result()


def _release(wake: threading.Lock | None) -> None:
    if wake is not None:
        wake.release()


class Scheduler:
    """The queue and workers behind ``Engine.submit``; see the module docstring for the rules.

    ``config`` is an ``EngineConfig`` (its scheduling fields are read; the scheduler sits below the
    engine's layer and does not import it). ``policy`` replaces the
    :class:`~edgecore._policy.BatchPolicy` built from ``config`` (it is only ever called under the
    scheduler's lock).
    """

    def __init__(
        self,
        models: Sequence[CompiledModel],
        config: Any,
        *,
        stats: StatsRecorder,
        pool: MemoryPool | None = None,
        policy: BatchPolicy | None = None,
    ) -> None:
        if not models:
            raise ConfigurationError("a Scheduler needs at least one compiled model")
        self._models = tuple(models)
        self.max_batch_size = config.max_batch_size
        self.priority_levels = config.priority_levels
        self._default_timeout_ns = int(config.default_timeout_ms * 1e6)
        self._max_queue = config.max_queue_size
        if policy is None:
            policy, why = BatchPolicy.for_model(config, models[0].inputs, models[0].outputs)
            if why:
                logger.info("requests to this model are not batched: %s", why)
        self._policy = policy
        self._runner = BatchRunner(
            models[0].backend, [spec.name for spec in models[0].outputs], stats=stats, pool=pool,
            on_cancelled=self._count_cancelled, on_unbatched=self._stop_batching,
        )
        self._stats = stats

        self._lock = threading.Lock()
        self._wakes = [threading.Lock() for _ in self._models]  # held = no signal pending
        for wake in self._wakes:
            wake.acquire()
        self._idle: list[int] = []  # workers asleep on their wake lock
        self._in_use = [0] * len(self._models)  # model i runs a batch: the running thread's ident, or 0
        self._helping: set[int] = set()  # threads of callers running a batch
        self._queue = RequestQueue(config.priority_levels)
        self._tokens = itertools.count(1)
        self._live: set[int] = set()  # tokens of batches taken off the queue and not settled yet
        self._arrivals = 0  # requests accepted so far
        self._closing = False
        self._ids = REQUEST_IDS  # process-wide, so that requests of different engines differ in a trace
        self.cancelled = 0  # futures cancelled before their batch ran (dropped)

        self._started = _now()
        self._busy_ns = [0] * len(self._models)
        self._workers = [
            threading.Thread(target=self._work, args=(i,), name=f"edgecore-worker-{i}", daemon=True)
            for i in range(len(self._models))
        ]
        for worker in self._workers:
            worker.start()

    @property
    def batching(self) -> bool:
        """Whether requests are batched (False for a model without batch dimension, or once a batched
        run showed that it has none)."""
        return self._policy.batching

    @property
    def adaptive(self) -> Any:
        """The :class:`~edgecore._policy.AdaptiveBatchSize` learning the limit, or None."""
        return self._policy.adaptive

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
        if self._policy.batching:  # read without the lock: a request queued as batching stops runs alone
            key = tuple([array.shape[1:] for array in feeds.values()])
            items = next(iter(feeds.values())).shape[0]
        else:
            key, items = None, 1
        now = _now()
        deadline = now + timeout_ns if timeout_ns else 0
        future = _Future(self, key, deadline, wake)
        request = Request(feeds, future, key, items, deadline, now, next(self._ids))
        with self._lock:
            if self._closing:
                raise EngineClosedError("the engine is closing or closed; it accepts no more requests")
            full = self._max_queue and self._queue.queued >= self._max_queue
            if not full:
                self._queue.push(request, priority)
                self._arrivals += 1
                waker = self._wake_one() if wake and self._idle else None
        if full:
            self._stats.record_failure("rejected")
            raise QueueFullError(
                f"the queue holds max_queue_size={self._max_queue} requests; retry later, or raise "
                f"max_queue_size or the engine's throughput (instances, max_batch_size)"
            )
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
        dropped: list[Request] = []
        token = 0
        try:
            with self._lock:
                self._closing = True
                if not drain:
                    token, dropped = self._take_all()
                idle, self._idle = self._idle, []
            for index in idle:
                self._wakes[index].release()
            self._runner.fail(dropped, None)
        finally:
            self._settle(dropped, None, token)
        current = threading.current_thread()
        for worker in self._workers:
            if worker is not current:
                worker.join()
        me = threading.get_ident()
        while True:
            with self._lock:
                if not self._helping - {me}:
                    break
            time.sleep(0.0005)
        self._fail_stranded("the engine closed")

    # -- answering (never under _lock) ----------------------------------------------------------------

    def _settle(self, requests: Sequence[Request], error: BaseException | None, token: int = 0) -> None:
        """Fail every future of ``requests`` that nobody answered (the scheduler failed, with ``error``
        or silently), let go of the scheduler, and retire the batch ``token``."""
        unanswered = 0
        for request in requests:
            future = request.future
            future._scheduler = None
            if future._state in _UNRESOLVED:
                unanswered += self._abandon(future, error)
        if unanswered:
            logger.error("the scheduler failed %d requests it had not answered (%r)", unanswered, error)
        if token:
            self._live.discard(token)

    def _abandon(self, future: _Future, error: BaseException | None, why: str = "") -> bool:
        """Fail ``future``, which the scheduler failed to answer (``error``: why, if known)."""
        cause = f"{type(error).__name__}: {error}" if error is not None else "it was left unanswered"
        failure = EdgecoreError(why or f"edgecore's scheduler failed while serving this request ({cause})")
        if isinstance(error, Exception):
            failure.__cause__ = error
        if answer(future, failure):
            self._runner.count(1)
            return True
        return False

    def _count_cancelled(self, cancelled: int) -> None:
        with self._lock:
            self.cancelled += cancelled

    def _stop_batching(self) -> None:
        with self._lock:
            self._policy.stop_batching()

    def _fail_stranded(self, why: str) -> None:
        """Fail whatever is queued when no worker is left to run it."""
        token = 0
        stranded: list[Request] = []
        try:
            with self._lock:
                if self._queue.queued:
                    token, stranded = self._take_all()
            if stranded:
                logger.error("%d queued requests have no worker left to run them (%s); failing them", len(stranded), why)
                self._runner.fail(stranded, EdgecoreError(f"no scheduler worker is left to run this request ({why})"))
        finally:
            self._settle(stranded, None, token)

    # -- a waiting caller's checks ----------------------------------------------------------------------

    def _check_interval(self, future: _Future) -> float:
        """How long a caller waits before it checks on ``future`` (at most until its deadline)."""
        deadline = future._deadline
        if deadline and not future._taken:
            return min(CHECK_INTERVAL_S, max(deadline - _now(), 0) / 1e9 + 0.0002)
        return CHECK_INTERVAL_S

    def _check(self, future: _Future) -> None:
        """After a wait: time out the expired queued requests (a worker may be busy) and fail
        ``future`` if nobody will answer it."""
        now = _now()
        token = 0
        expired: list[Request] = []
        try:
            with self._lock:
                if now >= self._queue.next_deadline:
                    self._queue.expire(now, expired)
                    token = self._claim(expired) if expired else 0
            if expired:
                self._runner.time_out(expired, now)
        finally:
            self._settle(expired, None, token)
        if not future._taken:
            if not any(worker.is_alive() for worker in self._workers):
                self._fail_stranded("the scheduler's workers have stopped")
            elif all(holder == threading.get_ident() for holder in self._in_use):
                self._abandon(future, None, (
                    "result() without a timeout was called on the thread that runs every model instance "
                    "(inside a future's callback?): this request could never run; do not wait for "
                    "results inside callbacks (chain them with add_done_callback), or add instances"
                ))
        elif future._token not in self._live and future._state in _UNRESOLVED:
            # taken by a batch that was settled, yet unanswered: a bug; never wait on it forever
            if self._abandon(future, None):
                logger.error("a request was taken off the queue and left unanswered; failing it")

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

    def _claim(self, requests: list[Request]) -> int:
        """The token of ``requests``, just taken off the queue: marked taken (no more helping), and
        live in ``_live`` until they are settled."""
        token = next(self._tokens)
        self._live.add(token)
        for request in requests:
            future = request.future
            future._taken, future._token = True, token
        return token

    def _take_all(self) -> tuple[int, list[Request]]:
        taken = self._queue.take_all()
        return self._claim(taken), taken

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

    def _size(self, head: Request, now: int, waiting: bool) -> int:
        """Items the policy sends now for ``head``'s shape, 0 to wait (``waiting``: already are)."""
        policy = self._policy
        return policy.size(
            policy.limit(head.deadline, now), self._queue.items[head.key], head.arrival, now,
            waiting=waiting, closing=self._closing,
        )

    def _take(self, head: Request, now: int, mark: int) -> tuple[int, list[Request]]:
        """The batch the policy sends now for ``head``, taken off the queue, and its token; (0, [])
        to wait. ``mark``: arrivals counted when the caller began waiting for a fuller batch (-1: it
        did not). Nothing after the take can raise."""
        size = self._size(head, now, mark >= 0)
        if not size:
            return 0, []
        policy = self._policy
        batch = self._queue.take(head.key, size)
        token = self._claim(batch)
        if policy.adaptive is not None:
            try:
                items = sum([request.items for request in batch])
                policy.dispatched(items, now, self._arrivals - mark if mark >= 0 else -1)
            except Exception:  # the batch runs anyway
                logger.exception("the batching policy failed to learn from a dispatch")
        return token, batch

    def _next(self, index: int, me: int) -> tuple[int, list[Request], list[Request], threading.Lock | None] | None:
        """Block until there is work: (token, batch, expired, wake: another worker to wake once the
        caller holds the work); None once closing with nothing queued.

        Frees the worker's model if it held it (thread ``me``); a returned batch holds it again.
        """
        queue = self._queue
        wake = None
        mark = -1  # arrivals counted when this worker began waiting for a fuller batch
        with self._lock:
            if self._in_use[index] == me:
                self._in_use[index] = 0
            while True:
                if not queue.queued:
                    if self._closing:
                        return None
                    self._sleep(index, -1)
                    continue
                now = _now()
                if now >= queue.next_deadline:
                    expired = queue.expire(now, [])
                    if expired:
                        return self._claim(expired), [], expired, None
                    if not queue.queued:
                        continue
                head = queue.head()
                if self._in_use[index]:  # a helping caller runs this model: hand the work on
                    if self._size(head, now, True):
                        _release(self._wake_one())
                        self._sleep(index, -1)  # the helper wakes this worker when it is done
                        continue
                else:
                    token, batch = self._take(head, now, mark)
                    if batch:
                        self._in_use[index] = me
                        if queue.queued:
                            wake = self._wake_one()  # another idle worker may take the rest
                        break
                if mark < 0:
                    mark = self._arrivals
                until = min(self._policy.send_by(head.arrival), queue.next_deadline)
                self._sleep(index, (until - now) / 1e9)
        return token, batch, [], wake

    # -- running a batch ------------------------------------------------------------------------------

    def _help(self, future: _Future) -> None:
        """Run ``future``'s batch in the calling thread if the policy sends it now and a model is free."""
        index = -1
        token = 0
        batch: list[Request] = []
        error = None
        me = threading.get_ident()
        try:
            with self._lock:
                queue = self._queue
                if future._taken or self._closing or not queue.queued:
                    return
                now = _now()
                if now >= queue.next_deadline:
                    return  # expiry first: a worker or a waiting caller does it
                try:
                    free = self._in_use.index(0)
                except ValueError:
                    return
                head = queue.head()
                if head.key != future._key:
                    return
                token, batch = self._take(head, now, -1)
                if not batch:
                    return
                index = free
                self._in_use[index] = me
                self._helping.add(me)
                wake = self._wake_one() if queue.queued else None
            _release(wake)
            started = _now()
            self._runner.run(self._models[index], batch)
            self._busy_ns[index] += _now() - started
        except BaseException as exc:
            error = exc
            logger.exception("scheduler failed while running a batch")
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt and the like belong to the calling thread
        finally:
            if batch:
                self._settle(batch, error, token)
            if index >= 0:
                with self._lock:
                    self._in_use[index] = 0
                    self._helping.discard(me)
                    wake = None
                    if queue.queued and index in self._idle:  # its worker may have slept while lent out
                        self._idle.remove(index)
                        wake = self._wakes[index]
                _release(wake)
            future = head = batch = error = None  # see edgecore._runner's docstring

    def _work(self, index: int) -> None:
        model = self._models[index]
        runner = self._runner
        busy = self._busy_ns
        me = threading.get_ident()
        while True:
            token = 0
            batch = expired = ()
            error = None
            try:
                work = self._next(index, me)
                if work is None:
                    return
                token, batch, expired, wake = work
                _release(wake)
                started = _now()
                if expired:
                    runner.time_out(expired, started)
                if batch:
                    runner.run(model, batch)
                busy[index] += _now() - started
            except BaseException as exc:  # a bug: fail what it concerns, keep serving
                error = exc
                logger.exception("scheduler failed while forming or running a batch")
                if not batch and not expired:  # forming the batch failed: fail what is queued
                    with self._lock:
                        token, batch = self._take_all()
            finally:
                if token:  # a batch or the expired requests (never both), all answered now
                    self._settle(batch or expired, error, token)
            error = work = batch = expired = wake = None
