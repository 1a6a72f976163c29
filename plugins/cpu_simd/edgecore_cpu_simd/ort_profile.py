"""onnxruntime's profile format, read into edgecore's runtime-neutral records.

ORT's profiler (``SessionOptions.enable_profiling``) writes a Trace Event JSON list: one ``Session``
event ``model_run`` per run, and ``Node`` events ``<node>_kernel_time`` for the kernels inside it, in
microseconds since the profiler started (``InferenceSession.get_profiling_start_time_ns()`` gives
that start as *wall-clock* ns). This module groups the kernels by run into
:class:`~edgecore.profiling.merge.BackendRun` records (ns on ORT's clock) and hands them to
:meth:`Profiler.merge_backend_runs <edgecore.profiling.profiler.Profiler.merge_backend_runs>`, which
places them inside edgecore's ``backend_execute`` spans (core knows no runtime format).

Measured with onnxruntime 1.32: the Python binding spends ~40 µs converting inputs before
``model_run`` starts, and ~2 µs after it ends; without a time base core therefore puts each run at
the end of its window. Pure functions; no state, no threads.
"""

from __future__ import annotations

import bisect
import os
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from edgecore.profiling.export import read_json_lenient
from edgecore.profiling.merge import BackendOp, BackendRun

if TYPE_CHECKING:
    from edgecore.profiling.profiler import Profiler

__all__ = ["RUNTIME", "load_ort_profile", "merge_ort_profile", "split_ort_runs"]

RUNTIME = "onnxruntime"
_KERNEL = "_kernel_time"


def load_ort_profile(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The event list of an onnxruntime profile file."""
    data = read_json_lenient(path)
    if isinstance(data, dict):
        data = data.get("traceEvents", [])
    if not isinstance(data, list):
        raise ValueError(f"{os.fspath(path)!r} is not an onnxruntime profile: expected a JSON list of events")
    return data


def split_ort_runs(events: Iterable[Mapping[str, Any]]) -> list[BackendRun]:
    """Group an onnxruntime profile's kernel events by the ``model_run`` they happened in (ns on
    ORT's clock, oldest run first)."""
    runs: list[Mapping[str, Any]] = []
    nodes: list[Mapping[str, Any]] = []
    for ev in events:
        if not isinstance(ev, Mapping) or ev.get("ph", "X") != "X":
            continue
        cat, name = ev.get("cat"), ev.get("name", "")
        if cat == "Session" and name == "model_run":
            runs.append(ev)
        elif cat == "Node" and name.endswith(_KERNEL):
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
        BackendRun(
            start_ns=float(r["ts"]) * 1000.0,
            end_ns=(float(r["ts"]) + float(r.get("dur", 0))) * 1000.0,
            tid=r.get("tid"),
            ops=tuple(_op(n) for n in sorted(g, key=lambda e: float(e["ts"]))),
        )
        for r, g in zip(runs, grouped)
    ]


def _op(node: Mapping[str, Any]) -> BackendOp:
    args = node.get("args") or {}
    name = node["name"][: -len(_KERNEL)]
    start = float(node["ts"]) * 1000.0
    return BackendOp(
        name=name,
        start_ns=start,
        end_ns=start + float(node.get("dur", 0)) * 1000.0,
        op_type=args.get("op_name", name),
        tid=node.get("tid"),
        args={"provider": args.get("provider", "")},
    )


def merge_ort_profile(
    profiler: Profiler,
    profile: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    *,
    match: Mapping[str, Any] | None = None,
    time_base_unix_ns: int | None = None,
    backend: str | None = None,
) -> int:
    """Merge an onnxruntime profile (the file ``end_profiling()`` returned, or its event list) into
    ``profiler``'s active session as child spans of the matching ``backend_execute`` spans.

    ``time_base_unix_ns``: ``InferenceSession.get_profiling_start_time_ns()``. Returns the number
    of events added (0 when no session records).
    """
    if not profiler.active:
        return 0
    events = load_ort_profile(profile) if isinstance(profile, (str, os.PathLike)) else profile
    return profiler.merge_backend_runs(
        split_ort_runs(events), match=match, time_base_unix_ns=time_base_unix_ns, runtime=RUNTIME, backend=backend
    )
