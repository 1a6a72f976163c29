"""The profiler: sessions of timed events, recorded cheaply from any thread.

Concurrency
-----------
One :class:`Profiler` is shared by every thread of the process (``Profiler.get_instance()``); tests
may build their own. Recording threads never take a lock:

* the active session's events live in a ``collections.deque(maxlen=capacity)`` -- a ring buffer
  whose ``append`` is atomic (under the GIL, and under a per-object lock on free-threaded builds);
  when it is full the *oldest* event falls out, and ``next()`` on an ``itertools.count`` counts
  every append, so ``appended - retained`` is the number of dropped events, reported in the export;
* ``start_global_session`` / ``stop_global_session`` / the registries take ``self._lock``; they
  publish or withdraw the session by assigning ``self._events`` (one atomic attribute store), so a
  recording thread sees either the whole session or none. A call that read ``_events`` just before
  the stop may still append to the stopped session's buffer; that event is kept (if the buffer has
  room) and the drop count stays exact once such in-flight calls have returned.

Hot path (what the engine calls per request)
--------------------------------------------
``if profiler.active: profiler.record(name, start_ns, end_ns, request_id=..., args=..., tid=...)``
with ``time.perf_counter_ns()`` timestamps. ``active`` is a plain attribute; ``record`` builds one
tuple, no dict, when ``args`` is None. ``args`` dicts are stored by reference: build one per batch,
share it between that batch's spans, and do not mutate it afterwards.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import os
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from edgecore.errors import ConfigurationError, EdgecoreError
from edgecore.profiling.events import STAGES, Event, EventSource, SessionData, Span, register_stage
from edgecore.profiling.export import write_chrome_trace
from edgecore.profiling.merge import BackendRun, Window, runs_to_spans

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CAPACITY",
    "STAGES",
    "EventSource",
    "Profiler",
    "ProfilerSessionError",
    "SessionData",
    "Span",
    "get_profiler",
    "next_batch_id",
    "next_request_id",
    "profile_function",
    "register_stage",
]

#: Events a session keeps before the oldest are overwritten (about 150 bytes each while recorded).
DEFAULT_CAPACITY = 1_000_000

_now = time.perf_counter_ns

#: Process-wide request and batch numbers, so that the requests of every engine in one trace have
#: distinct ids: ``next()`` on an ``itertools.count`` is atomic (a single C call). The scheduler
#: numbers every request it accepts; the direct path (``Engine.run``) numbers requests only while a
#: session records.
REQUEST_IDS = itertools.count(1)
BATCH_IDS = itertools.count(1)
next_request_id: Callable[[], int] = REQUEST_IDS.__next__
next_batch_id: Callable[[], int] = BATCH_IDS.__next__
# The OS thread id of the calling thread, cached per thread: get_native_id() is a system call, and
# get_ident() values are reused by new threads once old ones end (one thread's name would stick).
_tls = threading.local()
#: OS thread id -> thread name, for every thread that recorded (module-wide, shared by profilers).
_THREAD_NAMES: dict[int, str] = {}


def _register_thread() -> int:
    tid = _tls.tid = threading.get_native_id()
    _THREAD_NAMES[tid] = threading.current_thread().name
    return tid

F = TypeVar("F", bound=Callable[..., Any])


class ProfilerSessionError(EdgecoreError, RuntimeError):
    """A session was started twice, stopped while none runs, or asked for under an unknown name."""


class _Session:
    __slots__ = ("name", "capacity", "events", "counter", "reads", "start_ns", "start_unix_ns", "end_ns")

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.events: collections.deque = collections.deque(maxlen=capacity)
        self.counter = itertools.count()
        self.reads = 0
        self.start_unix_ns = time.time_ns()
        self.start_ns = _now()
        self.end_ns: int | None = None

    def appended(self) -> int:
        # next() returns how many times next() was called before: the appends plus our own reads.
        n = next(self.counter) - self.reads
        self.reads += 1
        return n


class _Scope:
    """Context manager returned by ``scoped_event`` while a session is active."""

    __slots__ = ("_profiler", "_name", "_request_id", "_args", "_start")

    def __init__(self, profiler: Profiler, name: str, request_id: Any, args: dict | None) -> None:
        self._profiler = profiler
        self._name = name
        self._request_id = request_id
        self._args = args

    def __enter__(self) -> _Scope:
        self._start = _now()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        end = _now()
        profiler = self._profiler
        events = profiler._events  # record(), inlined: this runs once per scope
        if events is None:
            return
        args = self._args
        if exc_type is not None:
            args = {**(args or {}), "error": exc_type.__name__}
        try:
            tid = _tls.tid
        except AttributeError:
            tid = _register_thread()
        events.append(("X", self._name, None, self._start, end, self._request_id, args, tid))
        profiler._tick()


class _NullScope:
    __slots__ = ()

    def __enter__(self) -> _NullScope:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


_NULL_SCOPE = _NullScope()


class Profiler:
    """Sessions of timed events; see the module docstring for the threading and hot-path contract."""

    _instance: Profiler | None = None
    _instance_lock = threading.Lock()

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        #: True while a session records. Read it before building anything for ``record``.
        self.active = False
        self._capacity = _check_capacity(capacity)
        self._lock = threading.RLock()
        self._session: _Session | None = None
        self._events: collections.deque | None = None  # the active session's buffer, or None
        self._tick: Callable[[], int] | None = None  # the active session's counter.__next__
        self._sessions: dict[str, SessionData] = {}
        self._sources: dict[str, EventSource] = {}
        self._flush_hooks: list[Callable[[Profiler], None]] = []

    # --- process-wide instance -------------------------------------------------------------

    @classmethod
    def get_instance(cls) -> Profiler:
        """The process-wide profiler (created on first use)."""
        inst = cls._instance
        if inst is None:
            with cls._instance_lock:
                inst = cls._instance
                if inst is None:
                    inst = cls._instance = cls()
        return inst

    def initialize(self, capacity: int = DEFAULT_CAPACITY) -> None:
        """Set the ring-buffer capacity (events) of the sessions started from now on."""
        with self._lock:
            self._capacity = _check_capacity(capacity)

    @property
    def capacity(self) -> int:
        return self._capacity

    # --- sessions --------------------------------------------------------------------------

    def start_global_session(self, name: str) -> None:
        """Start recording into a new session called ``name``; one session is active at a time."""
        if not name or not isinstance(name, str):
            raise ProfilerSessionError(f"session name must be a non-empty string, got {name!r}")
        with self._lock:
            if self._session is not None:
                raise ProfilerSessionError(
                    f"cannot start session {name!r}: session {self._session.name!r} is active; stop it first"
                )
            session = _Session(name, self._capacity)
            self._session = session
            self._tick = session.counter.__next__
            self._events = session.events
            self.active = True
        logger.debug("profiler session %r started (capacity %d)", name, session.capacity)

    def stop_global_session(self) -> SessionData:
        """Stop the active session and keep it for export under its name.

        Flush hooks (``add_flush_hook``) run first, while the session still records, so that
        backends can merge their own per-operator timings into it.
        """
        with self._lock:
            if self._session is None:
                raise ProfilerSessionError("no profiler session is active")
            for hook in list(self._flush_hooks):
                try:
                    hook(self)
                except Exception:  # a broken exporter must not lose the session
                    logger.exception("profiler flush hook %r failed", hook)
            session = self._session
            self.active = False
            self._events = None
            # self._tick stays: a call that read _events before this line still counts its append
            # on the stopped session's counter (the next start replaces _tick before _events).
            self._session = None
            session.end_ns = _now()
            data = self._snapshot(session, active=False)
            self._sessions[session.name] = data
        if data.dropped:
            logger.warning(
                "profiler session %r dropped %d of %d events (capacity %d); raise it with initialize(capacity=...)",
                data.name, data.dropped, data.recorded, data.capacity,
            )
        return data

    def session(self, name: str) -> SessionData:
        """The stopped session ``name``, or a snapshot of the active one."""
        with self._lock:
            if self._session is not None and self._session.name == name:
                return self._snapshot(self._session, active=True)
            try:
                return self._sessions[name]
            except KeyError:
                known = sorted(self._sessions) + ([self._session.name] if self._session else [])
                raise ProfilerSessionError(f"no profiler session {name!r}; sessions: {known}") from None

    def session_names(self) -> list[str]:
        with self._lock:
            names = list(self._sessions)
            if self._session is not None and self._session.name not in self._sessions:
                names.append(self._session.name)
            return names

    def discard_session(self, name: str) -> None:
        """Forget a stopped session (frees its events)."""
        with self._lock:
            self._sessions.pop(name, None)

    def export_session_as_json(self, name: str, path: str | os.PathLike[str]) -> os.PathLike[str] | str:
        """Write session ``name`` as Chrome Trace Event JSON (opens in Perfetto) and return the path."""
        return write_chrome_trace(self.session(name), path)

    def _snapshot(self, session: _Session, *, active: bool) -> SessionData:
        events = _copy(session.events)
        recorded = session.appended()
        threads = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        threads.update(_THREAD_NAMES)
        return SessionData(
            name=session.name,
            events=events,
            recorded=max(recorded, len(events)),
            dropped=max(0, recorded - len(events)),
            capacity=session.capacity,
            start_ns=session.start_ns,
            end_ns=session.end_ns if session.end_ns is not None else _now(),
            start_unix_ns=session.start_unix_ns,
            pid=os.getpid(),
            threads=threads,
            sources=tuple(self._sources.values()),
            active=active,
        )

    # --- hot path ----------------------------------------------------------------------------

    def record(
        self,
        name: str,
        start_ns: int,
        end_ns: int,
        *,
        request_id: Any = None,
        args: Mapping[str, Any] | None = None,
        tid: int | None = None,
    ) -> None:
        """Append a complete event (``time.perf_counter_ns()`` start and end); no-op when inactive.

        ``tid`` defaults to the calling thread's OS id; pass ``threading.get_native_id()`` of another
        thread (or a small int naming a track) to put the event on that thread's track.
        """
        events = self._events
        if events is None:
            return
        if tid is None:
            try:
                tid = _tls.tid
            except AttributeError:
                tid = _register_thread()
        events.append(("X", name, None, start_ns, end_ns, request_id, args, tid))
        self._tick()

    # --- convenience forms (seed API) --------------------------------------------------------

    def mark_event(self, request_id: Any, name: str, value: Any = None) -> None:
        """An instant event; for a registered event source with a numeric value, a counter sample."""
        events = self._events
        if events is None:
            return
        now = _now()
        try:
            tid = _tls.tid
        except AttributeError:
            tid = _register_thread()
        if name in self._sources and isinstance(value, (int, float)) and not isinstance(value, bool):
            events.append(("C", name, "custom", now, now, request_id, {name: value}, tid))
        else:
            args = None if value is None else {"value": value}
            events.append(("i", name, None, now, now, request_id, args, tid))
        self._tick()

    def scoped_event(self, request_id: Any, name: str, **args: Any) -> _Scope | _NullScope:
        """``with profiler.scoped_event(rid, "stage"):`` times the block (nothing when inactive)."""
        if self._events is None:
            return _NULL_SCOPE
        return _Scope(self, name, request_id, args or None)

    def profiled(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator timing every call of the function as an event (its qualified name by default)."""

        def decorate(fn: F) -> F:
            event_name = name or fn.__qualname__

            @functools.wraps(fn)
            def wrapper(*a: Any, **kw: Any) -> Any:
                if self._events is None:
                    return fn(*a, **kw)
                start = _now()
                try:
                    return fn(*a, **kw)
                finally:
                    self.record(event_name, start, _now())

            return wrapper  # type: ignore[return-value]

        return decorate

    def register_event_source(self, name: str, *, unit: str = "", description: str = "") -> EventSource:
        """Declare a custom metric; ``mark_event(rid, name, value)`` then records counter samples.

        Registering the same name again returns the existing source.
        """
        if not name or not isinstance(name, str):
            raise ConfigurationError(f"event source name must be a non-empty string, got {name!r}")
        with self._lock:
            source = self._sources.get(name)
            if source is None:
                source = self._sources[name] = EventSource(name=name, unit=unit, description=description)
            return source

    def event_sources(self) -> tuple[EventSource, ...]:
        with self._lock:
            return tuple(self._sources.values())

    # --- merging events from elsewhere (backends) --------------------------------------------

    def add_events(self, events: Iterable[Span | tuple]) -> int:
        """Merge already-timed events (``Span`` rows, perf_counter ns) into the active session.

        Returns how many were added (0 when no session is active).
        """
        buf = self._events
        if buf is None:
            return 0
        n = 0
        for ev in events:
            span = ev if isinstance(ev, Span) else Span(*ev)
            tid = span.tid
            if tid is None:
                tid = getattr(_tls, "tid", None) or _register_thread()
            buf.append(("X", span.name, span.cat, span.start_ns, span.end_ns, span.request_id, span.args, tid))
            self._tick()
            n += 1
        return n

    def spans(self, name: str | None = None, match: Mapping[str, Any] | None = None) -> list[Event]:
        """Complete events of the active session named ``name`` whose args contain ``match``."""
        buf = self._events
        if buf is None:
            return []
        out = []
        for ev in _copy(buf):
            if ev[0] != "X" or (name is not None and ev[1] != name):
                continue
            if match:
                args = ev[6] or {}
                if any(args.get(k) != v for k, v in match.items()):
                    continue
            out.append(ev)
        return out

    def merge_backend_runs(
        self,
        runs: Sequence[BackendRun],
        *,
        parent: str = "backend_execute",
        match: Mapping[str, Any] | None = None,
        time_base_unix_ns: int | None = None,
        runtime: str = "",
        backend: str | None = None,
        run_name: str = "model_run",
    ) -> int:
        """Merge a runtime's own per-operator timings as child spans of the ``parent`` spans.

        ``runs``: :class:`~edgecore.profiling.merge.BackendRun` records (ns on the runtime's clock,
        with their :class:`~edgecore.profiling.merge.BackendOp` spans), read by the backend plugin
        from its runtime's profile -- core knows no runtime's format. ``match`` picks the parent
        spans by their args (e.g. ``{"backend": "cpu_simd"}``). ``time_base_unix_ns`` is the
        wall-clock time (``time.time_ns()`` scale) of the runtime clock's zero; without it, runs are
        paired with parent spans in order, newest last. ``runtime``/``backend`` are written into the
        spans' args. Returns the number of events added (0 when no session is active).
        See :mod:`edgecore.profiling.merge` for the alignment rules.
        """
        session = self._session
        if session is None:
            return 0
        windows = [
            Window(start_ns=ev[3], end_ns=ev[4], tid=ev[7], request_id=ev[5], args=ev[6])
            for ev in self.spans(parent, match)
        ]
        offset = None
        if time_base_unix_ns is not None:
            # perf_counter_ns = unix_ns - (session unix start - session perf start)
            offset = time_base_unix_ns - (session.start_unix_ns - session.start_ns)
        spans = runs_to_spans(runs, windows, clock_offset_ns=offset, runtime=runtime, backend=backend,
                              run_name=run_name)
        return self.add_events(spans)

    def add_flush_hook(self, hook: Callable[[Profiler], None]) -> None:
        """Call ``hook(profiler)`` at every ``stop_global_session``, before the session closes."""
        with self._lock:
            self._flush_hooks.append(hook)

    def remove_flush_hook(self, hook: Callable[[Profiler], None]) -> None:
        with self._lock:
            try:
                self._flush_hooks.remove(hook)
            except ValueError:
                pass


def _copy(events: collections.deque) -> tuple[Event, ...]:
    """A copy of a buffer other threads may be appending to."""
    for _ in range(100):
        try:
            return tuple(events)
        except RuntimeError:  # "deque mutated during iteration": only if the copy let another thread run
            continue
    raise RuntimeError("could not copy the profiler buffer: it changes faster than it can be read")


def _check_capacity(capacity: int) -> int:
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
        raise ConfigurationError(f"profiler capacity must be a positive int (events), got {capacity!r}")
    return capacity


def get_profiler() -> Profiler:
    """The process-wide :class:`Profiler`."""
    return Profiler.get_instance()


def profile_function(name: str | None = None) -> Callable[[F], F]:
    """Decorator recording each call into the process-wide profiler's active session."""

    def decorate(fn: F) -> F:
        return get_profiler().profiled(name)(fn)

    return decorate
