"""Running the batches :mod:`edgecore.scheduler` takes off its queue: assembling the inputs in pool
buffers, executing, splitting the outputs, and answering every future, whatever happens.

Rules (the scheduler's docstring gives the whole picture): a batched run that fails is retried one
request at a time once the batch's buffers are released (this module's frames return first); a
batch that timed out is not retried; outputs that are not sized by the batch along dimension 0 turn
batching off (``on_unbatched``) and the batch is retried one by one. A request whose deadline passed
before it ran is answered with :class:`~edgecore.errors.RequestTimeoutError` without running.

Concurrency: a :class:`BatchRunner` has no state of its own beyond what its constructor receives; it
runs in the thread that took the batch (a worker or a helping caller), outside the scheduler's lock.
It resolves futures (their callbacks run here) and calls the statistics recorder, the memory pool
and the profiler, each with its own lock; ``on_cancelled`` and ``on_unbatched`` take the
scheduler's lock to change its counters and policy.

Frames of this module that ran a failed request let go of it before they return, as
``concurrent.futures`` does: the failure's traceback holds those frames and the future holds the
failure, so a frame still holding the future would make a cycle that keeps the request's buffers
until the garbage collector runs (and the collector may run anywhere, in any lock).
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from edgecore.errors import EngineClosedError, RequestTimeoutError
from edgecore.profiling.profiler import get_profiler, next_batch_id

if TYPE_CHECKING:
    from concurrent.futures import Future

    from edgecore._queue import Request
    from edgecore.backend import CompiledModel
    from edgecore.errors import EdgecoreError
    from edgecore.memory import MemoryPool
    from edgecore.stats import StatsRecorder

logger = logging.getLogger(__name__)

__all__ = ["BatchRunner", "answer"]

_now = time.perf_counter_ns
_InvalidState = concurrent.futures.InvalidStateError


def answer(future: Future, exc: BaseException) -> bool:
    """Fail ``future`` unless it is resolved or cancelled already; True when this call failed it."""
    try:
        future.set_exception(exc)
    except _InvalidState:
        return False
    return True


def _start(future: Future) -> bool | None:
    """Mark ``future`` running: True; False when it was cancelled; None when already answered."""
    try:
        return future.set_running_or_notify_cancel()
    except RuntimeError:
        return None


class BatchRunner:
    """Runs batches and answers their futures (see the module docstring)."""

    def __init__(
        self,
        backend: str,
        output_names: Sequence[str],
        *,
        stats: StatsRecorder,
        pool: MemoryPool | None,
        on_cancelled: Callable[[int], None],
        on_unbatched: Callable[[], None],
    ) -> None:
        self._backend = backend
        self._out_names = tuple(output_names)
        self._stats = stats
        self._pool = pool
        self._on_cancelled = on_cancelled
        self._on_unbatched = on_unbatched
        self._profiler = get_profiler()

    # -- answering without running --------------------------------------------------------------------

    def count(self, failed: int, cancelled: int = 0, kind: str = "failed") -> None:
        """Record ``failed`` requests (``kind``: failed or timed_out) and ``cancelled`` ones."""
        for _ in range(failed):
            self._stats.record_failure(kind)
        if cancelled:
            self._on_cancelled(cancelled)

    def fail(self, requests: Sequence[Request], error: EdgecoreError | None) -> None:
        """Fail queued ``requests`` with ``error`` (None: the engine closed before they ran)."""
        failed = cancelled = 0
        for request in requests:
            exc = error or EngineClosedError("the engine was closed before this request ran")
            if answer(request.future, exc):
                failed += 1
            elif request.future.cancelled():
                cancelled += 1
        self.count(failed, cancelled)

    def time_out(self, expired: Sequence[Request], now: int) -> None:
        """Answer ``expired`` requests (past their deadline, not run) with RequestTimeoutError."""
        timed_out = cancelled = 0
        for request in expired:
            waited = (now - request.arrival) / 1e6
            allowed = (request.deadline - request.arrival) / 1e6
            error = RequestTimeoutError(
                f"request waited {waited:.2f} ms in the queue, past its timeout of {allowed:g} ms; it did not run"
            )
            if answer(request.future, error):
                timed_out += 1
            elif request.future.cancelled():
                cancelled += 1
        self.count(timed_out, cancelled, "timed_out")

    # -- running ------------------------------------------------------------------------------------

    def run(self, model: CompiledModel, batch: list[Request]) -> None:
        """Run ``batch``, one request alone or several as one batch, and answer its futures."""
        try:
            if len(batch) == 1:
                request = batch[0]
                try:
                    started = request.future.set_running_or_notify_cancel()
                except RuntimeError:  # answered already
                    started = None
                if started:
                    self._run_alone(model, request)
                elif started is False:
                    self.count(0, 1)
                return
            live, cancelled = [], 0
            for request in batch:
                started = _start(request.future)
                if started:
                    live.append(request)
                elif started is False:
                    cancelled += 1
            if cancelled:
                self.count(0, cancelled)
            if len(live) > 1:
                live = self._run_batch(model, live)
            for request in live:  # one by one: the batch's buffers are released by now
                self._run_alone(model, request)
        finally:
            batch = request = live = None  # see the module docstring

    def _run_batch(self, model: CompiledModel, live: list[Request]) -> list[Request]:
        """Run ``live`` as one batch and answer it; or return the requests to run one by one."""
        items = sum([request.items for request in live])
        deadline = 0
        for request in live:
            if not request.deadline:
                deadline = 0
                break
            deadline = max(deadline, request.deadline)
        assembled = _now()
        try:
            feeds = self._assemble(live, items)
            started = _now()
            outputs = model.execute(feeds, None, deadline)
            finished = _now()
        except RequestTimeoutError as exc:  # past the latest deadline of the batch: past every one
            message = f"{exc} (in a batch of {len(live)} requests)"
            self.count(sum([answer(request.future, RequestTimeoutError(message)) for request in live]), 0, "timed_out")
            return []
        except Exception as exc:  # retried by the caller, once this frame and its buffers are gone
            why = f"{type(exc).__name__}: {exc}"  # a string: a kept log record must not hold the buffers
            logger.debug("a batch of %d requests failed (%s); running them one by one", len(live), why)
            return live
        del feeds
        names = self._out_names
        try:
            arrays = [outputs[name] for name in names]
            sized = all([array.ndim and array.shape[0] == items for array in arrays])
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            logger.warning("a batch of %d requests gave outputs that are not arrays by name (%s); running them one by one", len(live), why)
            return live
        if not sized:
            logger.warning(
                "a batch of %d items gave outputs of shapes %s: the model's dimension 0 is not a batch "
                "dimension; requests to it are no longer batched",
                items, [array.shape for array in arrays],
            )
            self._on_unbatched()
            return live
        offset = 0
        for request in live:
            end = offset + request.items
            try:
                request.future.set_result({name: array[offset:end] for name, array in zip(names, arrays)})
            except _InvalidState:
                pass
            offset = end
        resolved = _now()
        self._stats.record_batch(
            [resolved - request.arrival for request in live],
            sum([assembled - request.arrival for request in live]),
            items,
            finished - started,
        )
        if self._profiler.active:
            self._trace(live, items, assembled, started, finished, resolved)
        return []

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
        deadline = request.deadline
        if deadline and started >= deadline:
            self.time_out([request], started)
            return
        try:
            outputs = model.execute(request.feeds, None, deadline)
        except Exception as exc:
            answered = answer(request.future, exc)
            request = None  # see the module docstring
            if answered:
                self._stats.record_failure("timed_out" if isinstance(exc, RequestTimeoutError) else "failed")
            return
        finished = _now()
        try:
            request.future.set_result(outputs)
        except _InvalidState:
            return
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
            "backend": self._backend, "request_ids": [request.rid for request in batch],
        }
        lead = batch[0].rid
        if started > assembled:
            record("batch_assemble", assembled, started, request_id=lead, args=args)
        record("backend_execute", started, finished, request_id=lead, args=args)
        record("output_split", finished, resolved, request_id=lead, args=args)
        for request in batch:
            record("queue_wait", request.arrival, assembled, request_id=request.rid, args=args)
            record("inference_total", request.arrival, resolved, request_id=request.rid, args=args)
