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
Importing this package imports neither rich nor any runtime.
"""

from edgecore.profiling.export import session_to_chrome_trace, write_chrome_trace
from edgecore.profiling.merge import Window, layout_sequential, load_ort_profile, ort_runs_to_spans, split_ort_runs
from edgecore.profiling.profiler import (
    DEFAULT_CAPACITY,
    STAGES,
    EventSource,
    Profiler,
    ProfilerSessionError,
    SessionData,
    Span,
    get_profiler,
    next_batch_id,
    next_request_id,
    profile_function,
    register_stage,
)
from edgecore.profiling.viewer import TraceSummary, load_trace, summarize

__all__ = [
    "DEFAULT_CAPACITY",
    "STAGES",
    "EventSource",
    "Profiler",
    "ProfilerSessionError",
    "SessionData",
    "Span",
    "TraceSummary",
    "Window",
    "get_profiler",
    "layout_sequential",
    "load_ort_profile",
    "load_trace",
    "next_batch_id",
    "next_request_id",
    "ort_runs_to_spans",
    "profile_function",
    "register_stage",
    "session_to_chrome_trace",
    "split_ort_runs",
    "summarize",
    "write_chrome_trace",
]
