"""Trace summaries: what ``edgecore trace FILE`` shows, as data (and a renderer returning rich objects).

Reads edgecore's own traces (``export.py``), any Chrome Trace Event JSON (object or array form), and
onnxruntime's profiler files (a bare JSON list whose events have ``cat`` ``"Session"`` or ``"Node"``).

Definitions (the tests hold the code to them):

* times are relative to the trace start: the earliest ``ts`` of any timed event;
* ``start_ms`` / ``end_ms`` keep the events that *start* in ``[start_ms, end_ms)``;
* ``stage`` keeps the events named ``stage``, or operator spans whose op type is ``stage``;
* **requests** = distinct ``request_id`` / ``request_ids`` args of the kept events; without any, the
  number of ``inference_total`` events; without those, of ``model_run`` events (onnxruntime);
* **events** = kept events, metadata (``ph: "M"``) excluded; **duration** = first start to last end;
* **stages** are complete events that are not operator spans, grouped by name; P99 is the
  nearest-rank percentile (the ceil(0.99 n)-th smallest duration);
* **backend execution** = ``backend_execute`` spans grouped by their ``backend`` arg, plus the
  runtime-internal spans inside them (``model_run``, and any span of category ``"backend"``);
* **operators** = spans of ``cat`` ``"op"`` (edgecore) or ``"Node"`` ``*_kernel_time`` (onnxruntime),
  grouped by op type, ranked by total time.

Pure functions; safe from any thread.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import attrs

from edgecore.errors import ConfigurationError, InvalidInputError
from edgecore.profiling.export import read_json_lenient

__all__ = [
    "BackendStats",
    "OpStats",
    "StageStats",
    "Trace",
    "TraceEvent",
    "TraceSummary",
    "load_trace",
    "parse_trace",
    "percentile",
    "render_summary",
    "render_text",
    "select",
    "summarize",
    "summary_to_dict",
]

BACKEND_STAGES = ("backend_execute", "model_run")


class TraceEvent(NamedTuple):
    """A timed event, normalized (µs relative to the trace start).

    A NamedTuple, not an attrs record: traces hold millions of these and attrs' frozen __init__
    is several times slower to build.
    """

    name: str
    ph: str
    cat: str
    ts_us: float
    dur_us: float
    tid: Any
    args: Mapping[str, Any]
    op_type: str | None = None  # set on operator spans

    @property
    def end_us(self) -> float:
        return self.ts_us + self.dur_us


@attrs.frozen(kw_only=True)
class Trace:
    session: str
    source: str  # "edgecore", "onnxruntime" or "chrome"
    events: tuple[TraceEvent, ...]
    metadata: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class StageStats:
    name: str
    count: int
    avg_ms: float
    p50_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    total_ms: float


@attrs.frozen(kw_only=True)
class BackendStats:
    stage: str
    backend: str
    count: int
    avg_ms: float
    total_ms: float


@attrs.frozen(kw_only=True)
class OpStats:
    op_type: str
    count: int
    avg_ms: float
    total_ms: float
    percent: float  # of all operator time in the window


@attrs.frozen(kw_only=True)
class TraceSummary:
    session: str
    source: str
    total_requests: int
    total_events: int
    duration_ms: float
    stages: tuple[StageStats, ...]
    backend: tuple[BackendStats, ...]
    ops: tuple[OpStats, ...]
    top: int
    stage_filter: str | None = None
    start_ms: float | None = None
    end_ms: float | None = None
    dropped_events: int = 0


# --- reading ---------------------------------------------------------------------------------


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Read a trace file (edgecore, Chrome Trace Event JSON, or an onnxruntime profile).

    A missing or unreadable file, or one that is not JSON, raises
    :class:`~edgecore.errors.InvalidInputError` naming the file.
    """
    try:
        data = read_json_lenient(path)
    except OSError as exc:
        raise InvalidInputError(f"cannot read trace file {os.fspath(path)!r}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
        raise InvalidInputError(
            f"{os.fspath(path)!r} is not a trace: expected Chrome Trace Event JSON (an object with "
            f"traceEvents, or a list of events), got invalid JSON ({exc})"
        ) from exc
    return parse_trace(data, default_session=os.path.splitext(os.path.basename(os.fspath(path)))[0])


def _op_type(ev: Mapping[str, Any], args: Mapping[str, Any]) -> str | None:
    cat = ev.get("cat", "")
    if cat == "op":
        return str(args.get("op_type") or ev.get("name"))
    if cat == "Node":
        name = str(ev.get("name", ""))
        if name.endswith("_kernel_time"):
            return str(args.get("op_name") or name[: -len("_kernel_time")])
    return None


def parse_trace(data: Any, *, default_session: str = "trace") -> Trace:
    """Normalize a loaded trace (dict with ``traceEvents``, or a bare event list)."""
    if isinstance(data, dict):
        raw = data.get("traceEvents")
        if not isinstance(raw, list):
            raise InvalidInputError("not a trace: a JSON object needs a 'traceEvents' list")
        metadata = data.get("otherData") or data.get("metadata") or {}
        if not isinstance(metadata, dict):
            metadata = {}
    elif isinstance(data, list):
        raw, metadata = data, {}
    else:
        raise InvalidInputError(f"not a trace: expected a JSON object or list, got {type(data).__name__}")

    events = []
    process_name = None
    ort = False
    for ev in raw:
        if not isinstance(ev, dict) or "ph" not in ev:
            continue
        ph = ev["ph"]
        if ph == "M":
            if ev.get("name") == "process_name" and process_name is None:
                process_name = (ev.get("args") or {}).get("name")
            continue
        if ph not in ("X", "i", "I", "C", "B", "E") or "ts" not in ev:
            continue
        cat = str(ev.get("cat", ""))
        ort = ort or cat in ("Session", "Node")
        args = ev.get("args") or {}
        events.append((ev, ph, cat, args))

    events = _pair_begin_end(events)
    t0 = min((float(ev["ts"]) for ev, *_ in events), default=0.0)
    out = [
        TraceEvent(
            str(ev.get("name", "")),
            "i" if ph == "I" else ph,
            cat,
            float(ev["ts"]) - t0,
            float(ev.get("dur", 0.0)) if ph == "X" else 0.0,
            ev.get("tid"),
            args,
            _op_type(ev, args) if cat in ("op", "Node") else None,
        )
        for ev, ph, cat, args in events
    ]
    out.sort(key=lambda e: e.ts_us)
    if metadata.get("format") == "edgecore-trace":
        source = "edgecore"
    elif ort and not metadata:
        source = "onnxruntime"
    else:
        source = "chrome"
    session = metadata.get("session") or process_name or default_session
    return Trace(session=str(session), source=source, events=tuple(out), metadata=dict(metadata))


def _pair_begin_end(events: list[tuple]) -> list[tuple]:
    """Turn "B"/"E" pairs (per pid/tid, stack order) into "X" events; keep everything else."""
    if not any(ph in ("B", "E") for _, ph, *_ in events):
        return events
    out, stacks = [], {}
    for ev, ph, cat, args in sorted(events, key=lambda t: float(t[0]["ts"])):
        key = (ev.get("pid"), ev.get("tid"))
        if ph == "B":
            stacks.setdefault(key, []).append((ev, cat, args))
        elif ph == "E":
            if stacks.get(key):
                begin, bcat, bargs = stacks[key].pop()
                merged = dict(begin, ph="X", dur=float(ev["ts"]) - float(begin["ts"]))
                out.append((merged, "X", bcat, {**bargs, **(ev.get("args") or {})}))
        else:
            out.append((ev, ph, cat, args))
    return out


# --- summarizing -----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(k, len(ordered)) - 1]


def _request_ids(events: Iterable[TraceEvent]) -> set:
    ids: set = set()
    for e in events:
        rid = e.args.get("request_id")
        if rid is not None:
            ids.add(rid if isinstance(rid, (int, str)) else str(rid))
        rids = e.args.get("request_ids")
        if isinstance(rids, list):
            ids.update(r if isinstance(r, (int, str)) else str(r) for r in rids)
    return ids


def select(
    trace: Trace, *, stage: str | None = None, start_ms: float | None = None, end_ms: float | None = None
) -> list[TraceEvent]:
    """The events the summary's filters keep (see the module docstring)."""
    lo = -math.inf if start_ms is None else start_ms * 1000.0
    hi = math.inf if end_ms is None else end_ms * 1000.0
    return [
        e for e in trace.events
        if lo <= e.ts_us < hi and (stage is None or e.name == stage or e.op_type == stage)
    ]


def summarize(
    trace: Trace,
    *,
    stage: str | None = None,
    start_ms: float | None = None,
    end_ms: float | None = None,
    top: int = 5,
) -> TraceSummary:
    """The figures ``edgecore trace`` prints, for the events the filters keep."""
    if top < 1:
        raise ConfigurationError(f"top must be at least 1, got {top}")
    if start_ms is not None and end_ms is not None and end_ms < start_ms:
        raise ConfigurationError(f"end ({end_ms} ms) is before start ({start_ms} ms)")
    events = select(trace, stage=stage, start_ms=start_ms, end_ms=end_ms)

    ids = _request_ids(events)
    if ids:
        requests = len(ids)
    else:
        requests = sum(1 for e in events if e.ph == "X" and e.name == "inference_total")
        if not requests:
            requests = sum(1 for e in events if e.ph == "X" and e.name == "model_run")

    if events:
        duration_ms = (max(e.end_us for e in events) - min(e.ts_us for e in events)) / 1000.0
    else:
        duration_ms = 0.0

    by_stage: dict[str, list[float]] = {}
    by_backend: dict[tuple[str, str], list[float]] = {}
    by_op: dict[str, list[float]] = {}
    for e in events:
        if e.ph != "X":
            continue
        ms = e.dur_us / 1000.0
        if e.op_type is not None:
            by_op.setdefault(e.op_type, []).append(ms)
            continue
        if e.cat == "Node":  # onnxruntime fences: not stages, not operators
            continue
        by_stage.setdefault(e.name, []).append(ms)
        if e.name in BACKEND_STAGES or e.cat == "backend":
            backend = e.args.get("backend") or e.args.get("runtime") or ("onnxruntime" if e.cat == "Session" else "")
            by_backend.setdefault((e.name, str(backend)), []).append(ms)

    stages = sorted(
        (
            StageStats(
                name=name, count=len(d), avg_ms=sum(d) / len(d), p50_ms=percentile(d, 50), p99_ms=percentile(d, 99),
                min_ms=min(d), max_ms=max(d), total_ms=sum(d),
            )
            for name, d in by_stage.items()
        ),
        key=lambda s: (-s.avg_ms, s.name),
    )
    backend = sorted(
        (
            BackendStats(stage=st, backend=be, count=len(d), avg_ms=sum(d) / len(d), total_ms=sum(d))
            for (st, be), d in by_backend.items()
        ),
        key=lambda b: (b.stage != "backend_execute", -b.total_ms, b.stage, b.backend),
    )
    op_time = sum(sum(d) for d in by_op.values())
    ops = sorted(
        (
            OpStats(
                op_type=op, count=len(d), avg_ms=sum(d) / len(d), total_ms=sum(d),
                percent=100.0 * sum(d) / op_time if op_time else 0.0,
            )
            for op, d in by_op.items()
        ),
        key=lambda o: (-o.total_ms, o.op_type),
    )
    return TraceSummary(
        session=trace.session,
        source=trace.source,
        total_requests=requests,
        total_events=len(events),
        duration_ms=duration_ms,
        stages=tuple(stages[:top]),
        backend=tuple(backend),
        ops=tuple(ops[:top]),
        top=top,
        stage_filter=stage,
        start_ms=start_ms,
        end_ms=end_ms,
        dropped_events=int(trace.metadata.get("dropped_events", 0) or 0),
    )


def summary_to_dict(summary: TraceSummary) -> dict[str, Any]:
    """JSON-ready form of a summary (``edgecore trace --json``)."""
    return attrs.asdict(summary, recurse=True)


# --- rendering -------------------------------------------------------------------------------


def render_summary(summary: TraceSummary, *, path: str | None = None) -> Any:
    """A rich renderable laid out like the seed's trace-viewer example (print it with a Console)."""
    from rich import box
    from rich.console import Group
    from rich.rule import Rule
    from rich.table import Table
    from rich.text import Text

    def table(*columns: str) -> Table:
        t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
        for i, c in enumerate(columns):
            t.add_column(c, justify="right" if i else "left", no_wrap=True)
        return t

    parts: list[Any] = [Text("edgecore trace viewer", style="bold")]
    if path:
        parts.append(Text(f"Analyzing trace file: {path}"))
    parts += [Rule("TRACE SESSION SUMMARY"), Text("Session Information:", style="bold")]
    info = [
        f"   Name: {summary.session}",
        f"   Source: {summary.source}",
        f"   Total Requests: {summary.total_requests}",
        f"   Total Events: {summary.total_events}",
        f"   Duration: {summary.duration_ms:.2f} ms",
    ]
    filters = []
    if summary.stage_filter is not None:
        filters.append(f"stage={summary.stage_filter}")
    if summary.start_ms is not None or summary.end_ms is not None:
        lo = "start" if summary.start_ms is None else f"{summary.start_ms:g}"
        hi = "end" if summary.end_ms is None else f"{summary.end_ms:g}"
        filters.append(f"window=[{lo}, {hi}) ms")
    if filters:
        info.append(f"   Filter: {', '.join(filters)}")
    parts.append(Text("\n".join(info)))
    if summary.dropped_events:
        parts.append(Text(f"   Warning: the profiler dropped {summary.dropped_events} events (ring buffer full)",
                          style="yellow"))

    parts.append(Text(f"\nTop {summary.top} Slowest Stages (by average time):", style="bold"))
    t = table("Stage", "Count", "Avg (ms)", "P99 (ms)", "Total (ms)")
    for s in summary.stages:
        t.add_row(s.name, str(s.count), f"{s.avg_ms:.3f}", f"{s.p99_ms:.3f}", f"{s.total_ms:.3f}")
    parts.append(t if summary.stages else Text("   (no timed stages)"))

    parts.append(Text("\nBackend Execution Summary:", style="bold"))
    t = table("Backend Stage", "Backend", "Count", "Avg (ms)", "Total (ms)")
    for b in summary.backend:
        t.add_row(b.stage, b.backend or "-", str(b.count), f"{b.avg_ms:.3f}", f"{b.total_ms:.3f}")
    parts.append(t if summary.backend else Text("   (no backend_execute spans)"))

    if summary.ops:
        parts.append(Text(f"\nTop {summary.top} Operators (by total time):", style="bold"))
        t = table("Op Type", "Count", "Avg (ms)", "Total (ms)", "% of op time")
        for o in summary.ops:
            t.add_row(o.op_type, str(o.count), f"{o.avg_ms:.3f}", f"{o.total_ms:.3f}", f"{o.percent:.1f}")
        parts.append(t)

    parts += [Rule(), Text("Trace analysis complete!")]
    return Group(*parts)


def render_text(summary: TraceSummary, *, path: str | None = None, width: int = 100) -> str:
    """The rendered summary as plain text (no colours)."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, force_terminal=False, highlight=False).print(
        render_summary(summary, path=path)
    )
    return buf.getvalue()
