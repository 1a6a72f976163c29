"""What every benchmark script here shares: the machine description, its load, and interleaved timing.

Load (see MEASURING.md: a busy machine lies): the first use of anything here -- :func:`machine`,
:func:`timed_block`, :func:`interleaved` -- waits for a quiet machine (at most
``$EDGECORE_BENCH_QUIET_WAIT_S`` seconds, default 120; 0 = do not wait) and starts a
:class:`~edgecore.bench.machine.LoadMonitor` for the rest of the process: a reading every second and
one before every timed block. ``machine()["load"]`` is its live record (before, during, steal,
quiet), so a report written at the end of the script carries the whole run; each
:func:`interleaved` result carries its own ``load``. A busy machine is printed as a warning when it is
found and again when the script ends.

Interleaving: sides alternate in blocks of calls, the order flips every block, and the first calls of
each block are dropped, so that one runtime's spinning worker threads do not tax the side that runs
next. Ratios are per block (side / first side), summarized by their median.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from typing import Callable

import numpy as np

from edgecore.bench.machine import LoadMonitor, machine_info

__all__ = ["machine", "load_monitor", "timed_block", "interleaved"]

QUIET_WAIT_ENV = "EDGECORE_BENCH_QUIET_WAIT_S"
_monitor: LoadMonitor | None = None


def _warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def load_monitor() -> LoadMonitor:
    """This process's load monitor: started on first use, after waiting for a quiet machine."""
    global _monitor
    if _monitor is None:
        wait_s = float(os.environ.get(QUIET_WAIT_ENV, "120"))

        printed = [-1e9]

        def busy(reasons: list[str], waited: float) -> None:
            if waited - printed[0] >= 15:  # every 15 s of waiting, not every try
                printed[0] = waited
                _warn(f"machine busy ({'; '.join(reasons)}); waited {waited:.0f} of {wait_s:.0f} s for quiet")

        _monitor = LoadMonitor().start(wait_s=wait_s, on_busy=busy)
        before = _monitor.live["before"]
        if not before["quiet"]:
            _warn(f"measuring on a busy machine: {'; '.join(before['reasons'])} (figures not for the README)")
        atexit.register(_finish)
    return _monitor


def _finish() -> None:
    summary = _monitor.stop() if _monitor is not None else None
    if summary is not None and summary["quiet"] is False:
        during = summary["during"]
        _warn(
            f"the machine was busy during this benchmark ({during['busy_windows']} of {during['samples']} "
            f"readings busy: {', '.join(during['reasons']) or 'before the start'}; other processes' CPU "
            f"{during['other_cpu']}, steal {during['steal']}): its JSON says quiet=false"
        )


def machine() -> dict:
    """The machine and software a result was measured on (CPU, cores, versions), with ``load``: the
    live record of :func:`load_monitor` (complete when the report is written at the end)."""
    info = machine_info()
    info["load"] = load_monitor().live
    return info


def timed_block(fn: Callable[[], object], calls: int, drop: int) -> list[float]:
    """Call ``fn`` ``calls`` times; milliseconds of every call after the first ``drop``. A load
    reading is taken before the block, outside its timing."""
    load_monitor().sample()
    times = []
    for i in range(calls):
        start = time.perf_counter_ns()
        fn()
        if i >= drop:
            times.append((time.perf_counter_ns() - start) / 1e6)
    return times


def interleaved(sides: dict[str, Callable[[], object]], *, blocks: int, calls: int, drop: int) -> dict:
    """Alternate ``sides`` in blocks; per-side medians, each later side's ratio to the first, and the
    machine's ``load`` while they ran."""
    names = list(sides)
    monitor = load_monitor()
    since = monitor.windows
    kept: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names[1:]}
    for b in range(blocks):
        medians = {}
        for name in names if b % 2 == 0 else names[::-1]:
            times = timed_block(sides[name], calls, drop)
            kept[name].extend(times)
            medians[name] = float(np.median(times))
        for name in names[1:]:
            ratios[name].append(medians[name] / medians[names[0]])
    first = float(np.median(kept[names[0]]))
    return {
        "median_ms": {n: float(np.median(kept[n])) for n in names},
        "p90_ms": {n: float(np.percentile(kept[n], 90)) for n in names},
        "ratio": {n: float(np.median(r)) for n, r in ratios.items()},
        "ratio_iqr": {n: [float(np.percentile(r, 25)), float(np.percentile(r, 75))] for n, r in ratios.items()},
        "ratio_of_medians": {n: float(np.median(kept[n])) / first for n in names[1:]},
        "kept_calls": {n: len(kept[n]) for n in names},
        "load": _load_of(monitor.summary(since)),
    }


def _load_of(summary: dict) -> dict:
    """The part of a load record that belongs to one measurement: its window and verdict."""
    return {"quiet": summary["quiet"], "during": summary["during"]}
