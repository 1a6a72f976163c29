"""Put a runtime's own per-operator timings on edgecore's time base, inside ``backend_execute``.

Runtimes time their operators on clocks of their own. This module knows no runtime's file format:
a backend plugin reads its runtime's profile into runtime-neutral records and hands them over --

* runtimes that timestamp their runs (onnxruntime, TensorRT's IProfiler with a clock) give
  :class:`BackendRun` records, each with the :class:`BackendOp` spans inside it, in nanoseconds on
  the runtime's clock, and call :meth:`Profiler.merge_backend_runs
  <edgecore.profiling.profiler.Profiler.merge_backend_runs>` (or :func:`runs_to_spans` here);
* runtimes that report only per-layer durations (OpenVINO ``profiling_info``) lay them back to
  back inside the window they timed with :func:`layout_sequential`, and add the spans with
  :meth:`Profiler.add_events <edgecore.profiling.profiler.Profiler.add_events>`.

The result is :class:`~edgecore.profiling.events.Span` rows (``time.perf_counter_ns()``) that nest
inside the parent span of the run they belong to, so Perfetto draws queue -> batch -> kernel on one
track. The cpu_simd plugin's ``edgecore_cpu_simd.ort_profile`` is the worked example.

Alignment rules (each child span always ends up inside its parent window):

* with a known clock offset, a run is converted exactly and paired with the window that overlaps it
  most (among the windows on the run's own OS thread, when there are any); the offset is then
  corrected by the median of the shifts that would put each run inside its window (the two clocks
  are read tens of µs apart on a busy machine), and a run still outside is shifted by the least
  amount that puts it inside;
* without one, the newest runs are paired with the newest windows in order and each run is put at
  the end of its window (runtime bindings spend their conversion time before the run starts);
* a run longer than its window is scaled down to fit (ratios between operators are kept).

Pure functions; no state, no threads.
"""

from __future__ import annotations

import bisect
import logging
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from edgecore.profiling.events import Span

logger = logging.getLogger(__name__)

__all__ = ["BackendOp", "BackendRun", "Window", "layout_sequential", "runs_to_spans"]

#: Parent args copied onto the child spans, so that a kernel can be traced back to its batch.
_INHERITED_ARGS = ("batch_id", "batch_size", "backend", "model", "instance")


class Window(NamedTuple):
    """A parent span (usually ``backend_execute``) in perf_counter ns."""

    start_ns: int
    end_ns: int
    tid: int | None = None
    request_id: Any = None
    args: Mapping[str, Any] | None = None


class BackendOp(NamedTuple):
    """One operator (kernel) timed by a runtime, in ns on the runtime's clock.

    ``args`` are extra span args (e.g. ``{"provider": "CPUExecutionProvider"}``); ``tid`` the OS
    thread it ran on when the runtime says (None: the run's thread).
    """

    name: str
    start_ns: float
    end_ns: float
    op_type: str = ""
    tid: int | None = None
    args: Mapping[str, Any] | None = None


class BackendRun(NamedTuple):
    """One run of a model by a runtime (ns on the runtime's clock) and the operators timed inside it."""

    start_ns: float
    end_ns: float
    tid: int | None = None
    ops: tuple[BackendOp, ...] = ()


def _child_args(window: Window, extra: Mapping[str, Any]) -> dict[str, Any]:
    args = {}
    if window.args:
        for key in _INHERITED_ARGS:
            if key in window.args:
                args[key] = window.args[key]
    args.update(extra)
    return args


def _shift_into(r0: float, r1: float, window: Window) -> float:
    """The least shift (ns) that puts ``[r0, r1]`` inside ``window`` (0 if it already is)."""
    if r1 - r0 >= window.end_ns - window.start_ns:
        return window.start_ns - r0
    if r0 < window.start_ns:
        return window.start_ns - r0
    if r1 > window.end_ns:
        return window.end_ns - r1
    return 0.0


def _fit(run_start: float, run_end: float, window: Window, *, at_end: bool) -> tuple[float, float]:
    """(offset, scale) mapping a run's ns interval into ``window``: t -> w0 + (t - r0) * scale."""
    run_len = max(run_end - run_start, 0.0)
    win_len = max(window.end_ns - window.start_ns, 0)
    if run_len > win_len:
        return float(window.start_ns), (win_len / run_len if run_len else 1.0)
    if at_end:
        return window.end_ns - run_len, 1.0
    start = min(max(run_start, window.start_ns), window.end_ns - run_len)
    return start, 1.0


def _pair(runs: Sequence[BackendRun], windows: Sequence[Window], offset: float | None, runtime: str
          ) -> tuple[list[tuple[BackendRun, Window]], float | None]:
    """Runs paired with their parent windows, and the corrected clock offset."""
    if offset is None:
        k = min(len(runs), len(windows))
        if len(runs) != len(windows):
            logger.warning("pairing the last %d of %d %s runs with the last %d of %d parent spans",
                           k, len(runs), runtime or "backend", k, len(windows))
        return (list(zip(runs[len(runs) - k:], windows[len(windows) - k:])) if k else []), None
    # A run is paired only with parents on its own thread when there are any (runtimes record OS
    # thread ids, as edgecore does): concurrent instances stay apart.
    by_tid: dict[Any, list[Window]] = {}
    for w in windows:
        by_tid.setdefault(w.tid, []).append(w)
    starts_of = {tid: [w.start_ns for w in ws] for tid, ws in by_tid.items()}
    all_starts = [w.start_ns for w in windows]
    pairs = []
    for run in runs:
        r0, r1 = offset + run.start_ns, offset + run.end_ns
        best, best_overlap = None, 0.0
        if run.tid is not None and run.tid in by_tid:
            candidates, starts = by_tid[run.tid], starts_of[run.tid]
        else:
            candidates, starts = windows, all_starts
        hi = bisect.bisect_right(starts, r1)
        for w in candidates[max(0, hi - 8):hi]:  # parents do not nest; the last few starting before r1
            overlap = min(r1, w.end_ns) - max(r0, w.start_ns)
            if overlap > best_overlap or (best is None and overlap >= 0):
                best, best_overlap = w, overlap
        if best is not None:
            pairs.append((run, best))
    # The two clocks are read at slightly different moments (tens of µs apart on a busy machine):
    # correct the offset by the median shift that would put each run in its window.
    shifts = sorted(_shift_into(offset + r.start_ns, offset + r.end_ns, w) for r, w in pairs)
    if shifts:
        offset += shifts[len(shifts) // 2]
    return pairs, offset


def runs_to_spans(
    runs: Sequence[BackendRun],
    windows: Sequence[Window],
    *,
    clock_offset_ns: float | None = None,
    runtime: str = "",
    backend: str | None = None,
    run_name: str = "model_run",
) -> list[Span]:
    """Child spans of ``windows`` for a runtime's ``runs``: one ``run_name`` span (category
    "backend") per run and one span per operator (category "op", args ``op_type`` and the op's own).

    ``clock_offset_ns``: the perf_counter ns of the runtime clock's zero; None pairs runs and windows
    in order (newest with newest), each run ending where its window ends. Runs that no window
    overlaps are left out. ``runtime`` and ``backend`` go into the args of the spans.
    """
    windows = sorted(windows, key=lambda w: w.start_ns)
    pairs, offset = _pair(runs, windows, clock_offset_ns, runtime)
    run_args: dict[str, Any] = {"runtime": runtime} if runtime else {}
    if backend is not None:
        run_args["backend"] = backend
    spans: list[Span] = []
    for run, window in pairs:
        base = 0.0 if offset is None else offset
        r0, r1 = base + run.start_ns, base + run.end_ns
        start, scale = _fit(r0, r1, window, at_end=offset is None)

        def place(t0: float, t1: float) -> tuple[int, int]:
            s = start + (base + t0 - r0) * scale
            e = s + max(t1 - t0, 0.0) * scale
            s = min(max(s, window.start_ns), window.end_ns)
            e = min(max(e, s), window.end_ns)
            return int(round(s)), int(round(e))

        s, e = place(run.start_ns, run.end_ns)
        spans.append(Span(run_name, s, e, "backend", window.request_id, _child_args(window, run_args), window.tid))
        for op in run.ops:
            s, e = place(op.start_ns, op.end_ns)
            tid = window.tid if op.tid is None or op.tid == run.tid else op.tid
            child: dict[str, Any] = {"op_type": op.op_type or op.name}
            if op.args:
                child.update(op.args)
            if backend is not None:
                child["backend"] = backend
            spans.append(Span(op.name, s, e, "op", window.request_id, _child_args(window, child), tid))
    return spans


def layout_sequential(
    ops: Iterable[tuple[str, str, float]],
    window: Window,
    *,
    backend: str | None = None,
    runtime: str = "",
) -> list[Span]:
    """Spans for runtimes that report only per-layer durations (OpenVINO ``profiling_info``,
    TensorRT ``IProfiler``): ``(name, op_type, duration_us)`` rows laid back to back from the
    window's start, scaled down to fit when their sum exceeds the window."""
    ops = [(name, op_type, max(float(dur_us), 0.0)) for name, op_type, dur_us in ops]
    total_ns = sum(d for *_, d in ops) * 1000.0
    win_len = max(window.end_ns - window.start_ns, 0)
    scale = win_len / total_ns if total_ns > win_len and total_ns else 1.0
    t = float(window.start_ns)
    spans = []
    for name, op_type, dur_us in ops:
        e = t + dur_us * 1000.0 * scale
        extra: dict[str, Any] = {"op_type": op_type}
        if runtime:
            extra["runtime"] = runtime
        if backend is not None:
            extra["backend"] = backend
        s_ns = int(round(t))
        e_ns = min(max(int(round(e)), s_ns), window.end_ns)
        spans.append(Span(name, s_ns, e_ns, "op", window.request_id, _child_args(window, extra), window.tid))
        t = e
    return spans
