"""Chrome Trace Event JSON export: what Perfetto (ui.perfetto.dev) and chrome://tracing open.

The file is the "JSON Object Format" of the Trace Event Format::

    {"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {"session": ..., "dropped_events": ...}}

* ``ph: "X"`` complete events with ``ts``/``dur`` in microseconds (floats, ns resolution) from the
  session start; ``ph: "i"`` instants (``"s": "t"``, thread scope); ``ph: "C"`` counter samples of
  registered event sources; ``ph: "M"`` metadata naming the process and each thread.
* ``pid`` is the recording process, ``tid`` the OS thread id (``threading.get_native_id()``).
* ``args`` carries ``request_id`` and whatever the recorder attached (batch_id, batch_size, backend...).
* ``otherData`` carries the session metadata, including how many events the ring buffer dropped.

``profiling/trace_schema.json`` is the JSON schema of this output; docs/trace-format.md explains it.
Pure functions over an immutable :class:`SessionData`; safe from any thread.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

from edgecore.profiling.events import SessionData, category_of

__all__ = ["FORMAT_VERSION", "edgecore_version", "session_to_chrome_trace", "write_chrome_trace", "load_schema",
           "read_json_lenient"]

#: Bumped when the layout of ``otherData`` or of the events changes incompatibly.
FORMAT_VERSION = 1


def edgecore_version() -> str:
    """The installed distribution's version ("unknown" when edgecore runs from a bare source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgecore")
    except PackageNotFoundError:
        return "unknown"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "item"):  # numpy scalars
        try:
            return _jsonable(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def session_to_chrome_trace(session: SessionData) -> dict[str, Any]:
    """The Trace Event JSON object (a dict ready for ``json.dump``) of ``session``."""
    pid = session.pid
    t0 = session.start_ns
    for ev in session.events:  # events timed before the session started (e.g. a request already queued)
        if ev[3] < t0:
            t0 = ev[3]
    cats: dict[str, str] = {}
    converted: dict[int, dict[str, Any]] = {}  # args are shared per batch: convert each once
    tid_map: dict[Any, int] = {}
    names = session.threads
    synthetic = iter(range(1 << 30, 1 << 31))

    def os_tid(tid: Any) -> int:
        out = tid_map.get(tid)
        if out is None:
            if isinstance(tid, int) and 0 <= tid < (1 << 30):
                out = tid  # an OS thread id (Linux caps them at 2**22) or a track number
            else:  # e.g. a threading.get_ident() value: a track of its own
                out = next(synthetic)
            tid_map[tid] = out
        return out

    body: list[tuple[float, float, dict[str, Any]]] = []
    tids: set[int] = set()
    for ph, name, cat, start, end, request_id, args, tid in session.events:
        if cat is None:
            cat = cats.get(name)
            if cat is None:
                cat = cats[name] = category_of(name)
        ts = round((start - t0) / 1000.0, 3)
        tid = os_tid(tid)
        event: dict[str, Any] = {"name": name, "cat": cat, "ph": ph, "ts": ts, "pid": pid, "tid": tid}
        dur = 0.0
        if ph == "X":
            dur = event["dur"] = round(max(end - start, 0) / 1000.0, 3)
        elif ph == "i":
            event["s"] = "t"
        if args:
            key = id(args)  # the session holds every args object, so ids are stable here
            out_args = converted.get(key)
            if out_args is None:
                out_args = converted[key] = _jsonable(args)
        else:
            out_args = None
        if request_id is not None and ph != "C":  # counter args are the plotted series
            out_args = {**out_args, "request_id": _jsonable(request_id)} if out_args else {"request_id": _jsonable(request_id)}
        if out_args:
            event["args"] = out_args  # may be shared between events: it is only serialized
        tids.add(tid)
        body.append((ts, -dur, event))
    body.sort(key=lambda t: (t[0], t[1]))  # parents before their children at equal ts

    meta: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": f"edgecore: {session.name}"}},
    ]
    for tid in sorted(tids):
        thread_name = names.get(tid, f"thread {tid}")
        meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": thread_name}})

    return {
        "traceEvents": meta + [e for _, _, e in body],
        "displayTimeUnit": "ms",
        "otherData": {
            "format": "edgecore-trace",
            "format_version": FORMAT_VERSION,
            "session": session.name,
            "edgecore_version": edgecore_version(),
            "recorded_events": session.recorded,
            "dropped_events": session.dropped,
            "capacity": session.capacity,
            "start_time_unix_ns": session.start_unix_ns + (t0 - session.start_ns),
            "duration_ms": round((session.end_ns - t0) / 1e6, 6),
            "clock": "perf_counter_ns",
            "active": session.active,
            "event_sources": [
                {"name": s.name, "unit": s.unit, "description": s.description} for s in session.sources
            ],
            "host": platform.node(),
            "python": sys.version.split()[0],
        },
    }


def write_chrome_trace(session: SessionData | dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``session`` (or an already built trace dict) as JSON to ``path``; returns the path."""
    trace = session if isinstance(session, dict) else session_to_chrome_trace(session)
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(trace, separators=(",", ":"), allow_nan=False)  # one-shot: the C encoder
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def read_json_lenient(path: str | os.PathLike[str]) -> Any:
    """Load JSON, accepting the Trace Event "JSON Array Format" left unterminated (``[{..},{..},``),
    as runtimes write it while they profile."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        stripped = text.rstrip()
        if stripped.startswith("[") and not stripped.endswith("]"):
            return json.loads(stripped.rstrip(",") + "]")
        raise


def load_schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12) the exported traces follow."""
    from importlib.resources import files

    return json.loads(files("edgecore.profiling").joinpath("trace_schema.json").read_text(encoding="utf-8"))
