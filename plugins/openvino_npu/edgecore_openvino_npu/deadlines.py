"""Running one OpenVINO infer request under a deadline, and keeping the runs OpenVINO cannot stop.

With a deadline the request runs asynchronously (``start_async``) and the edgecore watchdog calls
``InferRequest.cancel()`` at the deadline. OpenVINO's CPU plugin looks at the cancel flag *between*
the operators of the top-level graph only: a run inside one long operator -- a ``Loop`` with a huge
trip count, whose body runs inside the one node -- does not stop. So the caller waits the deadline
plus :data:`CANCEL_GRACE_MS` and then:

* the run ended before the deadline: the results; it ended after it (stopped by the cancel, or
  finished anyway): :class:`~edgecore.errors.RequestTimeoutError`. The request is reusable either
  way (checked on OpenVINO 2026.4; a late ``cancel()`` on an idle request is harmless);
* it is still running: :class:`RunawayError` (a ``RequestTimeoutError``). The caller hands the
  request to :func:`keep` and must not touch it again. While it runs it holds its compiled model's
  stream (and graph lock): with one stream every later request of that compiled model -- even
  ``create_infer_request`` -- would wait for it, so the owner swaps in a freshly compiled model.

Why a keeper: destroying an ``InferRequest`` that still runs blocks the destroying thread until the
run ends (OpenVINO's ``stop_and_wait``), and the request does not keep the numpy arrays bound to it
alive. :func:`keep` therefore holds the request, its compiled model and the arrays it reads and
writes until the run ends; the holder is a daemon thread whose frame is frozen, never torn down, at
interpreter exit, so a process with a runaway still exits.

Concurrency: :func:`infer` runs in the caller's thread; :func:`keep` and :func:`running` may be
called from any thread. The keeper thread ``edgecore-openvino-runaways`` owns the held runs; the
counts per owner take ``_lock``.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from typing import Any

from edgecore.errors import RequestTimeoutError
from edgecore.watchdog import watch

logger = logging.getLogger(__name__)

__all__ = ["CANCEL_GRACE_MS", "RunawayError", "infer", "keep", "running"]

#: How long after the deadline a cancelled run may take to reach the end of its current operator.
CANCEL_GRACE_MS = 200
_POLL_S = 1.0  # how often the keeper looks whether held runs have ended


class RunawayError(RequestTimeoutError):
    """The deadline passed and the run did not stop when cancelled: it is still running."""


def infer(request: Any, deadline_ns: int) -> None:
    """Run ``request`` (tensors already bound); with ``deadline_ns`` (a ``perf_counter_ns``
    instant, 0 = none) cancel it then. Raises RequestTimeoutError, or RunawayError when the run
    goes on; the runtime's own failures propagate."""
    if not deadline_ns:
        request.infer()
        return
    left_ns = deadline_ns - time.perf_counter_ns()
    if left_ns <= 0:
        raise RequestTimeoutError("the request's deadline passed before OpenVINO started it")
    request.start_async()
    timer = watch(deadline_ns, request.cancel)
    try:
        done = request.wait_for(max(1, math.ceil(left_ns / 1e6) + CANCEL_GRACE_MS))
    except RuntimeError as exc:  # OpenVINO raises "Infer Request was canceled" from wait_for
        if timer.cancel():
            raise RequestTimeoutError(
                f"OpenVINO's run passed its deadline by {(time.perf_counter_ns() - deadline_ns) / 1e6:.0f} ms "
                "and was cancelled"
            ) from exc
        raise
    fired = timer.cancel()
    if not done:
        raise RunawayError(
            f"OpenVINO's run passed its deadline and did not stop within {CANCEL_GRACE_MS} ms of being "
            "cancelled: it is inside an operator OpenVINO cannot interrupt (a Loop or another control-flow "
            "node runs its whole body as one operator), and goes on in the background, holding a core"
        )
    if fired:  # it ended after the deadline, cancelled or not: the request is idle and reusable
        raise RequestTimeoutError(
            f"OpenVINO's run ended {(time.perf_counter_ns() - deadline_ns) / 1e6:.0f} ms past its deadline"
        )


class _Held:
    __slots__ = ("owner", "request", "refs", "since")

    def __init__(self, owner: int, request: Any, refs: tuple) -> None:
        self.owner, self.request, self.refs, self.since = owner, request, refs, time.monotonic()

    def ended(self) -> bool:
        try:
            return bool(self.request.wait_for(0))
        except Exception:  # it ended cancelled or failed: either way it ended
            return True


_lock = threading.Lock()
_counts: dict[int, int] = {}
_handoff: queue.SimpleQueue[_Held] = queue.SimpleQueue()
_keeper: threading.Thread | None = None


def keep(owner: int, request: Any, *refs: Any) -> None:
    """Hold ``request`` (still running) and ``refs`` (its compiled model, the arrays bound to it)
    until the run ends; ``owner`` (a key unique to the caller) is counted by :func:`running`."""
    global _keeper
    held = _Held(owner, request, refs)
    with _lock:
        _counts[held.owner] = _counts.get(held.owner, 0) + 1
        if _keeper is None or not _keeper.is_alive():
            _keeper = threading.Thread(target=_keep_loop, name="edgecore-openvino-runaways", daemon=True)
            _keeper.start()
    _handoff.put(held)


def running(owner: int) -> int:
    """How many runs of ``owner`` handed to :func:`keep` are still going."""
    with _lock:
        return _counts.get(owner, 0)


def _keep_loop() -> None:
    held: list[_Held] = []  # lives in this frame only: frozen, not destroyed, at interpreter exit
    while True:
        try:
            held.append(_handoff.get(timeout=_POLL_S if held else None))
            continue  # take every pending hand-off before polling
        except queue.Empty:
            pass
        still = []
        for run in held:
            if run.ended():
                logger.info("openvino: a run that outlived its deadline ended after %.1f s",
                            time.monotonic() - run.since)
                with _lock:
                    left = _counts.get(run.owner, 1) - 1
                    if left:
                        _counts[run.owner] = left
                    else:
                        _counts.pop(run.owner, None)
            else:
                still.append(run)
        held = still
