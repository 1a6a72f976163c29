"""What every benchmark script here shares: the machine description and interleaved timing.

Interleaving (see MEASURING.md): sides alternate in blocks of calls, the order flips every block, and
the first calls of each block are dropped, so that one runtime's spinning worker threads do not tax
the side that runs next. Ratios are per block (side / first side), summarized by their median.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from edgecore.bench.machine import machine_info

__all__ = ["machine", "timed_block", "interleaved"]


def machine() -> dict:
    """The machine and software a result was measured on (CPU, cores, load, versions)."""
    return machine_info()


def timed_block(fn: Callable[[], object], calls: int, drop: int) -> list[float]:
    """Call ``fn`` ``calls`` times; milliseconds of every call after the first ``drop``."""
    times = []
    for i in range(calls):
        start = time.perf_counter_ns()
        fn()
        if i >= drop:
            times.append((time.perf_counter_ns() - start) / 1e6)
    return times


def interleaved(sides: dict[str, Callable[[], object]], *, blocks: int, calls: int, drop: int) -> dict:
    """Alternate ``sides`` in blocks; per-side medians, and each later side's ratio to the first."""
    names = list(sides)
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
    }
