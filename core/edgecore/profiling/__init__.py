"""Profiling: sessions of timed events, Chrome-trace export (Perfetto), trace summaries.

Typical use::

    from edgecore.profiling import Profiler

    profiler = Profiler.get_instance()
    profiler.initialize(capacity=1_000_000)
    profiler.start_global_session("inference_session")
    with profiler.scoped_event(request_id, "model_execution"):
        ...
    profiler.mark_event(request_id, "inference_start")
    profiler.stop_global_session()
    profiler.export_session_as_json("inference_session", "trace.json")

The engine records its built-in stages (``STAGES``) through the cheap hot path
``if profiler.active: profiler.record(name, start_ns, end_ns, ...)``; see :mod:`.profiler`.

The package, layer 4 (observation), knows no runtime's profile format:

* :mod:`.events` -- the values (event rows, :class:`Span`, :class:`SessionData`, stage names);
* :mod:`.profiler` -- the ring buffer and the recording API;
* :mod:`.export` -- Chrome Trace Event JSON (what Perfetto opens);
* :mod:`.merge` -- runtime-neutral placement of a backend's own operator timings inside
  ``backend_execute`` (:class:`BackendRun`/:class:`BackendOp` records,
  :meth:`Profiler.merge_backend_runs`, :func:`layout_sequential`); each backend plugin reads its
  runtime's format itself (``edgecore_cpu_simd.ort_profile`` for onnxruntime).

:mod:`.viewer` (``edgecore trace``) is a layer-8 tool and is not imported here.
Importing this package imports neither rich nor any runtime.
"""

from edgecore.profiling.events import STAGES, EventSource, SessionData, Span, register_stage
from edgecore.profiling.export import session_to_chrome_trace, write_chrome_trace
from edgecore.profiling.merge import BackendOp, BackendRun, Window, layout_sequential, runs_to_spans
from edgecore.profiling.profiler import (
    DEFAULT_CAPACITY,
    Profiler,
    ProfilerSessionError,
    get_profiler,
    next_batch_id,
    next_request_id,
    profile_function,
)

__all__ = [
    "DEFAULT_CAPACITY",
    "STAGES",
    "BackendOp",
    "BackendRun",
    "EventSource",
    "Profiler",
    "ProfilerSessionError",
    "SessionData",
    "Span",
    "Window",
    "get_profiler",
    "layout_sequential",
    "next_batch_id",
    "next_request_id",
    "profile_function",
    "register_stage",
    "runs_to_spans",
    "session_to_chrome_trace",
    "write_chrome_trace",
]
