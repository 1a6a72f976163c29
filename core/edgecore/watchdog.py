"""Deadlines for runs in flight: one daemon thread calls a callback when a deadline passes.

Backends use it to stop a runaway run through their runtime's own cancel (ONNX Runtime's
``RunOptions.terminate``, OpenVINO's ``InferRequest.cancel``)::

    timer = watch(deadline_ns, run_options.__setattr__, "terminate", True)
    try:
        session.run(..., run_options)
    finally:
        fired = timer.cancel()  # True if the deadline passed first: answer RequestTimeoutError

Concurrency: ``watch`` and ``Timer.cancel`` may be called from any thread; callbacks run in the
thread ``edgecore-watchdog``, outside the lock, and must be quick and must not raise. A cancelled
timer is skipped when its deadline comes (the heap is not searched on cancel).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Any, Callable

__all__ = ["Timer", "watch"]

logger = logging.getLogger(__name__)


class Timer:
    """A pending callback; :meth:`cancel` it once the run it guards has returned."""

    __slots__ = ("deadline_ns", "_call", "_args", "_state")

    def __init__(self, deadline_ns: int, call: Callable[..., Any], args: tuple) -> None:
        self.deadline_ns = deadline_ns
        self._call = call
        self._args = args
        self._state = 0  # 0 pending, 1 fired, 2 cancelled

    def cancel(self) -> bool:
        """Stop the callback from running; True if it ran already (the deadline passed first)."""
        with _lock:
            fired = self._state == 1
            self._state = 2 if not fired else 1
        return fired

    @property
    def fired(self) -> bool:
        return self._state == 1


_lock = threading.Lock()
_wakeup = threading.Condition(_lock)
_heap: list[tuple[int, int, Timer]] = []
_order = itertools.count()
_thread: threading.Thread | None = None


def watch(deadline_ns: int, call: Callable[..., Any], *args: Any) -> Timer:
    """Call ``call(*args)`` at ``deadline_ns`` (a :func:`time.perf_counter_ns` instant) unless
    the returned timer is cancelled first."""
    global _thread
    timer = Timer(deadline_ns, call, args)
    with _lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_loop, name="edgecore-watchdog", daemon=True)
            _thread.start()
        earliest = _heap[0][0] if _heap else None
        heapq.heappush(_heap, (deadline_ns, next(_order), timer))
        if earliest is None or deadline_ns < earliest:
            _wakeup.notify()
    return timer


def _loop() -> None:
    while True:
        with _lock:
            while True:
                while _heap and _heap[0][2]._state == 2:
                    heapq.heappop(_heap)
                if not _heap:
                    _wakeup.wait()
                    continue
                left = _heap[0][0] - time.perf_counter_ns()
                if left <= 0:
                    timer = heapq.heappop(_heap)[2]
                    timer._state = 1
                    break
                _wakeup.wait(left / 1e9)
        try:
            timer._call(*timer._args)
        except Exception:  # a callback must not kill the watchdog
            logger.exception("edgecore watchdog: a deadline callback failed")
