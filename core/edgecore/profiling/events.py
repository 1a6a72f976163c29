"""What a profiling session is made of: event rows, spans to merge, sessions, stage names.

The values every other profiling module shares -- the profiler records them, the exporter writes
them, the merge functions build them -- so that none of those modules imports another to get them.
No state but the stage registry (:func:`register_stage`), no threads.
"""

from __future__ import annotations

import types
from typing import Any, Mapping, NamedTuple

import attrs

from edgecore.errors import ConfigurationError

__all__ = ["CATEGORIES", "STAGES", "Event", "EventSource", "SessionData", "Span", "category_of", "register_stage"]

_STAGES: dict[str, str] = {
    "inference_total": "request",
    "queue_wait": "request",
    "batch_assemble": "batch",
    "backend_execute": "batch",
    "output_split": "batch",
    "model_load": "model",
    "compile": "model",
    "model_run": "backend",  # the runtime's own run, inside backend_execute
}
#: Stage names and the trace category each is exported under (``optimize/<pass>`` is "model",
#: unknown names "user"); extended with :func:`register_stage`.
STAGES: Mapping[str, str] = types.MappingProxyType(_STAGES)
CATEGORIES = ("request", "batch", "model", "backend", "op", "custom", "user")


def register_stage(name: str, category: str) -> None:
    """Export events named ``name`` under ``category``; "backend" puts them in the viewer's backend
    execution summary (e.g. a plugin's own ``openvino_infer`` span inside ``backend_execute``)."""
    if category not in CATEGORIES:
        raise ConfigurationError(f"unknown trace category {category!r}; known: {list(CATEGORIES)}")
    known = _STAGES.get(name)
    if known is not None and known != category:
        raise ConfigurationError(f"stage {name!r} is already registered under category {known!r}")
    _STAGES[name] = category


def category_of(name: str) -> str:
    """The trace category of events named ``name`` (those recorded with ``cat`` None)."""
    cat = _STAGES.get(name)
    if cat is not None:
        return cat
    if name.startswith("optimize/") or name == "optimize":
        return "model"
    return "user"


class Span(NamedTuple):
    """An event to merge into the active session (``Profiler.add_events``).

    A NamedTuple rather than an attrs record: merged backend traces hold thousands of these and they
    are stored as plain tuples. Times are ``time.perf_counter_ns()`` nanoseconds; ``tid`` is an OS
    thread id (``threading.get_native_id()``, as runtimes report them) or a small int naming a track.
    """

    name: str
    start_ns: int
    end_ns: int
    cat: str | None = None
    request_id: Any = None
    args: Mapping[str, Any] | None = None
    tid: int | None = None


# Stored event rows: (ph, name, cat, start_ns, end_ns, request_id, args, tid).
# ph is "X" (complete), "i" (instant) or "C" (counter); cat None means "derive from the name".
Event = tuple


@attrs.frozen(kw_only=True)
class EventSource:
    """A named source of custom values (``register_event_source``); exported as a counter track."""

    name: str
    unit: str = ""
    description: str = ""


@attrs.frozen(kw_only=True)
class SessionData:
    """A stopped (or snapshotted) session: everything the exporter needs, immutable."""

    name: str
    events: tuple[Event, ...]
    recorded: int
    dropped: int
    capacity: int
    start_ns: int
    end_ns: int
    start_unix_ns: int
    pid: int
    #: OS thread id -> thread name.
    threads: Mapping[int, str] = attrs.field(converter=dict, factory=dict)
    sources: tuple[EventSource, ...] = ()
    active: bool = False
