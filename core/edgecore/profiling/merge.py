"""Put a runtime's own per-operator timings on edgecore's time base, inside ``backend_execute``.

Runtimes time their operators on clocks of their own: onnxruntime writes microseconds since its
profiler started (``InferenceSession.get_profiling_start_time_ns()`` gives that start as *wall-clock*
ns); OpenVINO and TensorRT give only per-layer durations. The functions here turn those into
:class:`~edgecore.profiling.profiler.Span` rows (``time.perf_counter_ns()``) that nest inside the
``backend_execute`` span of the run they belong to, so Perfetto draws queue -> batch -> kernel on one
track.

Alignment rules (each child span always ends up inside its parent window):

* with a known time base, a run is converted exactly and paired with the window that overlaps it
  most (among the windows on the run's own OS thread, when there are any); the offset between the clocks is then corrected by the median of the shifts that would put
  each run inside its window (the clocks are read tens of µs apart on a busy machine), and a run
  still outside is shifted by the least amount that puts it inside;
* without one, the newest runs are paired with the newest windows in order and each run is put at
  the end of its window (measured with onnxruntime 1.32: the Python binding spends ~40 µs converting
  inputs before ``model_run`` starts, and ~2 µs after it ends);
* a run longer than its window is scaled down to fit (ratios between operators are kept).

Pure functions; no state, no threads.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from edgecore.profiling.profiler import Span

logger = logging.getLogger(__name__)

__all__ = ["OrtRun", "Window", "layout_sequential", "load_ort_profile", "ort_runs_to_spans", "read_json_lenient",
           "split_ort_runs"]

#: Parent args copied onto the child spans, so that a kernel can be traced back to its batch.
_INHERITED_ARGS = ("batch_id", "batch_size", "backend", "model", "instance")


class Window(NamedTuple):
    """A parent span (usually ``backend_execute``) in perf_counter ns."""

    start_ns: int
    end_ns: int
    tid: int | None = None
    request_id: Any = None
    args: Mapping[str, Any] | None = None


class OrtRun(NamedTuple):
    """One ``model_run`` of an onnxruntime profile and the kernels timed inside it (µs, ORT clock)."""

    start_us: float
    end_us: float
    tid: int | None
    nodes: tuple[Mapping[str, Any], ...]


def read_json_lenient(path: str | os.PathLike[str]) -> Any:
    """Load JSON, accepting the Trace Event "JSON Array Format" left unterminated (``[{..},{..},``)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        stripped = text.rstrip()
        if stripped.startswith("[") and not stripped.endswith("]"):
            return json.loads(stripped.rstrip(",") + "]")
        raise


def load_ort_profile(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The event list of an onnxruntime profile file (``SessionOptions.enable_profiling``)."""
    data = read_json_lenient(path)
    if isinstance(data, dict):
        data = data.get("traceEvents", [])
    if not isinstance(data, list):
        raise ValueError(f"{os.fspath(path)!r} is not an onnxruntime profile: expected a JSON list of events")
    return data


def split_ort_runs(events: Iterable[Mapping[str, Any]]) -> list[OrtRun]:
    """Group an onnxruntime profile's kernel events by the ``model_run`` they happened in."""
    runs: list[Mapping[str, Any]] = []
    nodes: list[Mapping[str, Any]] = []
    for ev in events:
        if not isinstance(ev, Mapping) or ev.get("ph", "X") != "X":
            continue
        cat, name = ev.get("cat"), ev.get("name", "")
        if cat == "Session" and name == "model_run":
            runs.append(ev)
        elif cat == "Node" and name.endswith("_kernel_time"):
            nodes.append(ev)
    runs.sort(key=lambda e: float(e["ts"]))
    starts = [float(r["ts"]) for r in runs]
    grouped: list[list[Mapping[str, Any]]] = [[] for _ in runs]
    for node in nodes:
        ts = float(node["ts"])
        i = bisect.bisect_right(starts, ts) - 1
        if i >= 0 and ts <= starts[i] + float(runs[i].get("dur", 0)):
            grouped[i].append(node)
    return [
        OrtRun(
            start_us=float(r["ts"]),
            end_us=float(r["ts"]) + float(r.get("dur", 0)),
            tid=r.get("tid"),
            nodes=tuple(sorted(g, key=lambda e: float(e["ts"]))),
        )
        for r, g in zip(runs, grouped)
    ]


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


def ort_runs_to_spans(
    runs: Sequence[OrtRun],
    windows: Sequence[Window],
    *,
    perf_offset_ns: float | None = None,
    backend: str | None = None,
) -> list[Span]:
    """Child spans (``model_run`` + one per kernel) of ``windows`` for onnxruntime ``runs``.

    ``perf_offset_ns``: perf_counter ns of the profile's ``ts == 0``; None pairs runs and windows in
    order (newest with newest), each run ending where its window ends. Runs that no window overlaps
    are left out.
    """
    windows = sorted(windows, key=lambda w: w.start_ns)
    pairs: list[tuple[OrtRun, Window]] = []
    if perf_offset_ns is None:
        k = min(len(runs), len(windows))
        if len(runs) != len(windows):
            logger.warning("pairing the last %d of %d onnxruntime runs with the last %d of %d parent spans",
                           k, len(runs), k, len(windows))
        if k:
            pairs = list(zip(runs[len(runs) - k:], windows[len(windows) - k:]))
    else:
        # A run is paired only with parents on its own thread when there are any (onnxruntime's
        # profile records OS thread ids, as edgecore does): concurrent instances stay apart.
        by_tid: dict[Any, list[Window]] = {}
        for w in windows:
            by_tid.setdefault(w.tid, []).append(w)
        starts_of = {tid: [w.start_ns for w in ws] for tid, ws in by_tid.items()}
        all_starts = [w.start_ns for w in windows]
        for run in runs:
            r0 = perf_offset_ns + run.start_us * 1000.0
            r1 = perf_offset_ns + run.end_us * 1000.0
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
        # The two clocks are read at slightly different moments (tens of µs apart on a busy
        # machine): correct the offset by the median shift that would put each run in its window.
        shifts = sorted(_shift_into(perf_offset_ns + r.start_us * 1000.0, perf_offset_ns + r.end_us * 1000.0, w)
                        for r, w in pairs)
        if shifts:
            perf_offset_ns += shifts[len(shifts) // 2]

    spans: list[Span] = []
    for run, window in pairs:
        base = 0.0 if perf_offset_ns is None else perf_offset_ns
        r0 = base + run.start_us * 1000.0
        r1 = base + run.end_us * 1000.0
        start, scale = _fit(r0, r1, window, at_end=perf_offset_ns is None)

        def place(ts_us: float, dur_us: float) -> tuple[int, int]:
            s = start + (base + ts_us * 1000.0 - r0) * scale
            e = s + dur_us * 1000.0 * scale
            s = min(max(s, window.start_ns), window.end_ns)
            e = min(max(e, s), window.end_ns)
            return int(round(s)), int(round(e))

        s, e = place(run.start_us, run.end_us - run.start_us)
        extra = {"runtime": "onnxruntime"} if backend is None else {"runtime": "onnxruntime", "backend": backend}
        spans.append(Span("model_run", s, e, "backend", window.request_id, _child_args(window, extra), window.tid))
        for node in run.nodes:
            args = node.get("args") or {}
            s, e = place(float(node["ts"]), float(node.get("dur", 0)))
            name = node["name"][: -len("_kernel_time")]
            node_tid = node.get("tid")
            tid = window.tid if node_tid is None or node_tid == run.tid else node_tid
            child = {"op_type": args.get("op_name", name), "provider": args.get("provider", "")}
            if backend is not None:
                child["backend"] = backend
            spans.append(Span(name, s, e, "op", window.request_id, _child_args(window, child), tid))
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
