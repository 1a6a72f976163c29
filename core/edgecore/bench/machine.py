"""The machine a benchmark ran on: CPU, cores, memory, OS, Python, and versions of edgecore, its
plugins and every inference runtime installed (read from metadata only: no runtime is imported);
and how busy it was before and during the run.

A busy machine lies (MEASURING.md: one other busy process on 2 cores turned ResNet-50's INT8 speedup
from ~1.9x into 1.01x). :func:`wait_for_quiet` waits, a bounded time, for a quiet machine before a
run; :class:`LoadMonitor` samples the load average, CPU steal (``/proc/stat``) and the CPU time other
processes take while it runs, and says whether the run was quiet. Its ``live`` record goes into a
results document as ``machine.load``::

    with LoadMonitor().start(wait_s=60) as load:
        ...  # measure; load.sample() between blocks adds readings
    report["machine"]["load"] = load.summary()

Quiet means: before the run, a load average of at most ``load_per_core`` per core; before and
during, other processes' CPU time at most ``other_cpu`` of the machine's and steal at most
``steal`` of it. During the run the load average counts the benchmark's own threads, so it is
recorded but not judged. ``/proc/stat`` and the load average are machine-wide (a container sees its
host's unless lxcfs virtualizes them); without ``/proc/stat`` steal and other CPU are None.

Concurrency: a :class:`LoadMonitor`'s sampler thread (``edgecore-load-monitor``) and any caller of
:meth:`LoadMonitor.sample` add readings under the monitor's lock; ``live`` is replaced value by value
(never resized), so a thread that serializes it while the sampler runs sees a consistent record.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any, Callable

import attrs

__all__ = [
    "machine_info",
    "cpu_flags",
    "RUNTIMES",
    "CpuTimes",
    "LoadReading",
    "LoadWindow",
    "LoadThresholds",
    "LoadMonitor",
    "parse_proc_stat",
    "read_load",
    "load_window",
    "wait_for_quiet",
    "monitor_load",
]

logger = logging.getLogger(__name__)

#: Distributions whose versions a benchmark records when installed.
RUNTIMES = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-openvino",
    "openvino",
    "tensorrt",
    "tensorrt-cu12",
    "tensorrt-cu13",
    "cuda-python",
    "torch",
    "onnx",
    "onnx-ir",
    "onnxscript",
    "numpy",
)

_SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "asimd", "sve")


@functools.cache
def cpu_flags() -> tuple[str, frozenset[str]]:
    """``(model name, feature flags)`` of this CPU as the OS reports them (Linux /proc/cpuinfo)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return name, frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model") and value.strip():
            name = value.strip()
        elif key in ("flags", "Features"):
            flags.update(value.split())
    return name, frozenset(flags)


def _cpu() -> tuple[str, tuple[str, ...]]:
    name, flags = cpu_flags()
    return name, tuple(flag for flag in _SIMD_FLAGS if flag in flags)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _plugins() -> dict[str, dict[str, str | None]]:
    found = {}
    for ep in importlib.metadata.entry_points(group="edgecore"):
        dist = ep.dist
        found[ep.name] = {
            "module": ep.value,
            "distribution": dist.name if dist is not None else None,
            "version": dist.version if dist is not None else None,
        }
    return found


def machine_info() -> dict[str, Any]:
    """Facts about this machine and software, as JSON-ready values."""
    import psutil

    cpu, simd = _cpu()
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    frequency = psutil.cpu_freq()
    from edgecore import __version__

    return {
        "cpu": cpu,
        "cpu_simd": list(simd),
        "cpu_max_mhz": round(frequency.max, 1) if frequency and frequency.max else None,
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "usable_cores": affinity,
        "memory_total_mb": round(psutil.virtual_memory().total / 2**20, 1),
        "load_average": load,
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "edgecore": __version__,
        "runtimes": {name: version for name in RUNTIMES if (version := _version(name)) is not None},
        "plugins": _plugins(),
    }


# -- load and steal -------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class CpuTimes:
    """The machine-wide counters of ``/proc/stat``'s ``cpu`` line, in clock ticks.

    ``busy`` is user + nice + system + irq + softirq (guest time is inside user); ``total`` adds idle,
    iowait and steal. ``cpus`` counts the ``cpuN`` lines.
    """

    total: int
    busy: int
    steal: int
    cpus: int


def parse_proc_stat(text: str) -> CpuTimes | None:
    """The ``cpu`` line of a ``/proc/stat`` text, or None when it has none."""
    aggregate, cpus = None, 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            aggregate = line
        elif line.startswith("cpu") and line[3:4].isdigit():
            cpus += 1
    if aggregate is None:
        return None
    try:
        fields = [int(v) for v in aggregate.split()[1:]]
    except ValueError:
        return None
    fields += [0] * (8 - len(fields))  # kernels before 2.6.11 have no steal column
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return CpuTimes(
        total=user + nice + system + idle + iowait + irq + softirq + steal,
        busy=user + nice + system + irq + softirq,
        steal=steal,
        cpus=cpus or 1,
    )


@attrs.frozen(kw_only=True)
class LoadReading:
    """One reading: when (``time.monotonic``), the load averages, the CPU counters, and the CPU
    seconds this process and its children used so far."""

    at: float
    load_average: tuple[float, float, float] | None
    cpu: CpuTimes | None
    own_cpu_s: float


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _own_cpu_s() -> float:
    """CPU seconds of this process (every thread) and of its children, running or ended."""
    ended = os.times()
    return time.process_time() + ended.children_user + ended.children_system + _running_children_cpu_s()


def _children(pid: str) -> list[str]:
    found: list[str] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            found += Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:  # the thread ended, or a kernel without CONFIG_PROC_CHILDREN
            continue
    return found


def _running_children_cpu_s() -> float:
    """CPU seconds of this process's running descendants (``/proc/<pid>/task/*/children``; 0
    without them). The benchmark's own child processes are not "other processes"."""
    total, todo, seen = 0.0, _children("self"), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)
        todo += _children(pid)
    return total


def read_load() -> LoadReading:
    """A reading of this machine now."""
    try:
        load = tuple(round(v, 3) for v in os.getloadavg())
    except (AttributeError, OSError):
        load = None
    try:
        cpu = parse_proc_stat(Path("/proc/stat").read_text())
    except OSError:
        cpu = None
    return LoadReading(at=time.monotonic(), load_average=load, cpu=cpu, own_cpu_s=_own_cpu_s())


@attrs.frozen(kw_only=True)
class LoadWindow:
    """What happened between two readings: its length, the 1-minute load average at its end, and
    the shares of all CPU time that were stolen and that other processes used (None: unknown)."""

    seconds: float
    load1: float | None
    steal: float | None
    other_cpu: float | None


def load_window(first: LoadReading, last: LoadReading) -> LoadWindow:
    """The :class:`LoadWindow` from ``first`` to ``last``."""
    steal = other = None
    if first.cpu is not None and last.cpu is not None:
        ticks = last.cpu.total - first.cpu.total
        if ticks > 0:
            steal = max(0.0, (last.cpu.steal - first.cpu.steal) / ticks)
            own = (last.own_cpu_s - first.own_cpu_s) * _TICKS
            other = min(1.0, max(0.0, (last.cpu.busy - first.cpu.busy - own) / ticks))
    load1 = last.load_average[0] if last.load_average else None
    return LoadWindow(seconds=max(0.0, last.at - first.at), load1=load1, steal=steal, other_cpu=other)


def _cores(reading: LoadReading) -> int:
    return reading.cpu.cpus if reading.cpu is not None else (os.cpu_count() or 1)


@attrs.frozen(kw_only=True)
class LoadThresholds:
    """When a machine counts as busy: a load average above ``load_per_core`` per core (before a run
    only), other processes taking more than ``other_cpu`` of all CPU time, or more than ``steal`` of
    it stolen by the hypervisor."""

    load_per_core: float = 0.5
    other_cpu: float = 0.2
    steal: float = 0.03

    def reasons(self, window: LoadWindow, cores: int, *, judge_load: bool) -> list[str]:
        """Why ``window`` is busy (empty: quiet), each as ``"kind: detail"`` with kind ``load_average``,
        ``other_cpu`` or ``steal``. ``judge_load``: also the load average (not while the benchmark
        itself runs, whose threads it counts)."""
        found = []
        if judge_load and window.load1 is not None and window.load1 > self.load_per_core * cores:
            found.append(f"load_average: {window.load1:.2f} on {cores} cores (> {self.load_per_core} per core)")
        if window.other_cpu is not None and window.other_cpu > self.other_cpu:
            found.append(f"other_cpu: other processes use {window.other_cpu:.0%} of the CPU (> {self.other_cpu:.0%})")
        if window.steal is not None and window.steal > self.steal:
            found.append(f"steal: {window.steal:.1%} of the CPU stolen (> {self.steal:.0%})")
        return found

    def to_json(self) -> dict[str, float]:
        return attrs.asdict(self)


def _window_json(window: LoadWindow, load_average: tuple | None, reasons: list[str]) -> dict[str, Any]:
    return {
        "load_average": list(load_average) if load_average else None,
        "steal": _round(window.steal),
        "other_cpu": _round(window.other_cpu),
        "window_s": round(window.seconds, 3),
        "quiet": not reasons,
        "reasons": reasons,
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def wait_for_quiet(
    max_wait_s: float = 60.0,
    *,
    interval_s: float = 2.0,
    thresholds: LoadThresholds = LoadThresholds(),
    reader: Callable[[], LoadReading] = read_load,
    sleep: Callable[[float], Any] = time.sleep,
    on_busy: Callable[[list[str], float], Any] | None = None,
    judge_load: bool = True,
) -> dict[str, Any]:
    """Watch windows of ``interval_s`` until one is quiet or ``max_wait_s`` have passed
    (``judge_load=False``: by other processes' CPU and steal only, for a caller whose own earlier
    work still sits in the load average).

    Returns the last window as JSON (``load_average``, ``steal``, ``other_cpu``, ``quiet``,
    ``reasons``) with ``waited_s`` and ``tries``. ``on_busy(reasons, waited_s)`` is called after
    each busy window that is followed by another try; a busy machine is also logged.
    """
    first = previous = reader()
    tries = 0
    while True:
        sleep(interval_s)
        current = reader()
        tries += 1
        window = load_window(previous, current)
        reasons = thresholds.reasons(window, _cores(current), judge_load=judge_load)
        waited = current.at - first.at
        if not reasons or waited >= max_wait_s:
            record = _window_json(window, current.load_average, reasons)
            record.update(waited_s=round(waited, 1), tries=tries)
            if reasons:
                logger.warning("the machine is busy (%s) after waiting %.0f s for it to be quiet; measuring anyway",
                               "; ".join(reasons), waited)
            return record
        if on_busy is not None:
            on_busy(reasons, waited)
        if tries == 1:
            logger.warning("the machine is busy (%s); waiting up to %.0f s for it to be quiet",
                           "; ".join(reasons), max_wait_s)
        previous = current


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": round(min(values), 4), "max": round(max(values), 4), "mean": round(sum(values) / len(values), 4)}


class LoadMonitor:
    """Samples the machine's load while a benchmark runs (see the module docstring).

    ``start(wait_s=...)`` first waits for a quiet machine (:func:`wait_for_quiet`; 0: only one
    reading), then a daemon thread takes a reading every ``interval_s``; :meth:`sample` adds one
    (between two blocks of a measurement, outside their timing). :attr:`live` is the JSON record,
    refreshed at every reading: ``before``, ``during`` (``samples``, ``load1``, ``other_cpu`` and
    ``steal`` as min/max/mean, ``busy_windows``, ``reasons``), ``steal`` (over the whole run),
    ``quiet``, ``cores`` and ``thresholds``.
    """

    def __init__(
        self,
        *,
        interval_s: float = 1.0,
        thresholds: LoadThresholds = LoadThresholds(),
        reader: Callable[[], LoadReading] = read_load,
    ) -> None:
        self.interval_s = interval_s
        self.thresholds = thresholds
        self._reader = reader
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first: LoadReading | None = None
        self._last: LoadReading | None = None
        self._windows: list[LoadWindow] = []
        self._busy: list[list[str]] = []
        self._warned = False
        self.live: dict[str, Any] = {
            "before": None, "during": None, "steal": None, "quiet": None, "cores": None,
            "thresholds": thresholds.to_json(),
            "note": "the load average during the run counts the benchmark's own threads: it is recorded, not "
                    "judged; other_cpu and steal are shares of all CPU time",
        }

    # -- life --------------------------------------------------------------------------------------

    def start(
        self, *, wait_s: float = 0.0, wait_interval_s: float = 2.0,
        on_busy: Callable[[list[str], float], Any] | None = None, sampler: bool = True, judge_load: bool = True,
    ) -> LoadMonitor:
        """Wait up to ``wait_s`` for a quiet machine, record it as ``before``, start sampling
        (``sampler``: in a thread; without it, only :meth:`sample` adds readings). ``judge_load=False``:
        the caller has been working itself, so the load average (its own work too) is recorded, not
        judged; give ``wait_s`` so that a window of other processes' CPU and steal is."""
        if wait_s > 0:
            before = wait_for_quiet(wait_s, interval_s=wait_interval_s, thresholds=self.thresholds,
                                    reader=self._reader, on_busy=on_busy, judge_load=judge_load)
            first = self._reader()
        else:
            first = self._reader()
            window = LoadWindow(seconds=0.0, load1=first.load_average[0] if first.load_average else None,
                                steal=None, other_cpu=None)
            reasons = self.thresholds.reasons(window, _cores(first), judge_load=judge_load)
            before = _window_json(window, first.load_average, reasons)
            before.update(waited_s=0.0, tries=0)
            if reasons:
                logger.warning("the machine is busy as the benchmark starts: %s", "; ".join(reasons))
        with self._lock:
            self._first = self._last = first
            self.live["before"] = before
            self.live["cores"] = _cores(first)
            self._refresh()
        if sampler:
            self._thread = threading.Thread(target=self._loop, name="edgecore-load-monitor", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> LoadWindow | None:
        """Take a reading now; returns the window since the previous one (None before start)."""
        reading = self._reader()
        with self._lock:
            if self._last is None:
                return None
            window = load_window(self._last, reading)
            self._last = reading
            self._windows.append(window)
            reasons = self.thresholds.reasons(window, _cores(reading), judge_load=False)
            if reasons:
                self._busy.append(reasons)
            self._refresh()
            warn = bool(reasons) and not self._warned
            self._warned = self._warned or warn
        if warn:
            logger.warning("the machine is busy during the benchmark: %s", "; ".join(reasons))
        return window

    def stop(self) -> dict[str, Any]:
        """Stop sampling (one last reading) and return :meth:`summary`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._first is not None:
            self.sample()
        summary = self.summary()
        if summary["quiet"] is False:
            logger.warning("the machine was busy during the benchmark (%s): its figures carry other work",
                           "; ".join(summary["during"]["reasons"] or summary["before"]["reasons"]))
        return summary

    def __enter__(self) -> LoadMonitor:
        if self._first is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- the record --------------------------------------------------------------------------------

    @property
    def windows(self) -> int:
        """How many windows (readings after the first) were taken."""
        with self._lock:
            return len(self._windows)

    def summary(self, since: int = 0) -> dict[str, Any]:
        """A copy of :attr:`live`; with ``since`` (a :attr:`windows` count taken earlier), ``during``
        covers only the windows after it."""
        with self._lock:
            record = dict(self.live)
            if since:
                record["during"] = self._during(self._windows[since:], None)
                record["quiet"] = bool(record["before"] and record["before"]["quiet"]) and \
                    not record["during"]["busy_windows"]
        return record

    def _during(self, windows: list[LoadWindow], busy: list[list[str]] | None) -> dict[str, Any]:
        if busy is None:
            busy = [r for r in (self.thresholds.reasons(w, self.live["cores"] or 1, judge_load=False)
                                for w in windows) if r]
        reasons = sorted({reason.split(":", 1)[0] for found in busy for reason in found})
        return {
            "samples": len(windows),
            "seconds": round(sum(w.seconds for w in windows), 3),
            "load1": _stats([w.load1 for w in windows if w.load1 is not None]),
            "other_cpu": _stats([w.other_cpu for w in windows if w.other_cpu is not None]),
            "steal": _stats([w.steal for w in windows if w.steal is not None]),
            "busy_windows": len(busy),
            "reasons": reasons,
        }

    def _refresh(self) -> None:
        """Rebuild :attr:`live` from the readings (under ``_lock``): values replaced, keys kept."""
        during = self._during(self._windows, self._busy)
        steal = None
        if self._first is not None and self._last is not None and self._last is not self._first:
            steal = load_window(self._first, self._last).steal
        before = self.live["before"]
        self.live["during"] = during
        self.live["steal"] = _round(steal)
        self.live["quiet"] = bool(before and before["quiet"]) and not during["busy_windows"]


def monitor_load(machine: dict[str, Any], *, wait_s: float = 0.0) -> LoadMonitor:
    """Start a :class:`LoadMonitor` (after waiting up to ``wait_s`` for a quiet machine) whose live
    record is ``machine["load"]``; the caller stops it when the run ends."""
    monitor = LoadMonitor().start(wait_s=wait_s)
    machine["load"] = monitor.live
    return monitor
