"""The server scenario: Poisson arrivals at a target QPS; and the search for the peak QPS under a
p99 latency bound (MLPerf LoadGen's server scenario and its ``--find-peak-performance`` mode).

Queries reach edgecore through ``Engine.submit`` when the engine has a scheduler, or else through
``settings.concurrency`` worker threads calling ``Engine.run``; the raw runtime always through the
same number of worker threads. Latency runs from the moment a query was due, so a system that falls
behind sees its queue in its p99.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgecore.bench import loops
from edgecore.bench.context import ScenarioContext
from edgecore.bench.results import Measured, ScenarioResult
from edgecore.bench.settings import BenchSettings

__all__ = ["server", "MAX_PROBES", "PEAK_TOLERANCE"]

#: Most server runs one peak search makes.
MAX_PROBES = 10
#: The search stops when the passing and failing QPS are this close (relative).
PEAK_TOLERANCE = 0.05
#: Below the first probe's rate, the search halves at most this many times before giving up.
MAX_HALVINGS = 4


def _rate_estimate(warm_ms: list[float]) -> float:
    """Queries per second one worker sustained in warm-up (its last half, median)."""
    tail = warm_ms[len(warm_ms) // 2 :] or [1.0]
    return 1e3 / max(float(np.median(tail)), 1e-3)


def _run_at(
    ctx: ScenarioContext, feeds: Any, qps: float, settings: BenchSettings, progress: Any = None
) -> dict[str, Measured]:
    chunk = math.ceil(max(settings.min_queries, settings.duration_s * qps))
    return ctx.measure(
        loops.poisson(feeds, qps, seed=settings.seed), chunk=chunk, settings=settings, progress=progress
    )


def _passes(measured: Measured, bound_ms: float) -> bool:
    """Within the bound, nothing failed. A system (or issuer) that cannot keep up builds a queue, and
    since latency counts from each query's due time, the queue shows in p99."""
    latency = measured.latency
    return bool(latency and latency.p99 <= bound_ms and not measured.failures)


def _metrics(measured: Measured, qps: float, bound_ms: float | None, dispatch: str) -> dict[str, Any]:
    latency = measured.latency
    return {
        "target_qps": qps,
        "achieved_qps": measured.queries_per_s,
        "p99_ms": latency.p99 if latency else None,
        "latency_bound_ms": bound_ms,
        "meets_bound": (latency.p99 <= bound_ms) if (latency and bound_ms is not None) else None,
        "dispatch": dispatch,
        "peak": None,
    }


def server(ctx: ScenarioContext) -> ScenarioResult:
    """Poisson arrivals at ``target_qps``: achieved QPS and latency percentiles (p99 above all);
    with ``find_peak``, the highest QPS whose p99 stays within ``latency_bound_ms``."""
    settings = ctx.settings
    feeds = ctx.feeds()
    rate = _rate_estimate(ctx.warm_up(feeds, concurrent=True))
    if settings.find_peak:
        return _find_peak(ctx, feeds, settings.target_qps or max(0.5, 0.5 * rate))
    qps = settings.target_qps or round(max(0.5, 0.5 * rate), 2)
    measured = _run_at(ctx, feeds, qps, settings)
    bound = settings.latency_bound_ms
    dispatch = ctx.session.scheduler()
    raw_dispatch = f"run from {settings.concurrency} worker threads"
    raw = measured.get("raw")
    return ctx.result(
        measured,
        metrics=_metrics(measured["edgecore"], qps, bound, dispatch),
        raw_metrics=_metrics(raw, qps, bound, raw_dispatch) if raw is not None else None,
    )


def _probe_record(qps: float, measured: Measured, bound_ms: float) -> dict[str, Any]:
    latency = measured.latency
    return {
        "target_qps": qps,
        "achieved_qps": measured.queries_per_s,
        "p50_ms": latency.p50 if latency else None,
        "p99_ms": latency.p99 if latency else None,
        "queries": measured.queries,
        "failures": measured.failures,
        "passed": _passes(measured, bound_ms),
    }


def _find_peak(ctx: ScenarioContext, feeds: Any, start_qps: float) -> ScenarioResult:
    settings = ctx.settings
    bound = float(settings.latency_bound_ms)  # type: ignore[arg-type]
    probes: list[dict[str, Any]] = []
    raw_probes: list[dict[str, Any]] = []
    low, high = 0.0, math.inf
    best: dict[str, Measured] | None = None
    last: dict[str, Measured] = {}
    qps = start_qps
    for index in range(MAX_PROBES):

        def progress(fraction: float, index: int = index, qps: float = qps) -> None:
            ctx.progress((index + fraction) / MAX_PROBES, f"probe {qps:.1f} QPS")

        last = _run_at(ctx, feeds, qps, settings, progress)
        probes.append(_probe_record(qps, last["edgecore"], bound))
        if "raw" in last:
            raw_probes.append(_probe_record(qps, last["raw"], bound))
        if probes[-1]["passed"]:
            low, best = qps, last
        else:
            high = qps
        if math.isinf(high):
            qps *= 2
        elif high - low <= PEAK_TOLERANCE * high or (low == 0 and high <= start_qps / 2**MAX_HALVINGS):
            break
        else:
            qps = (low + high) / 2
    ctx.progress(1.0, f"peak {low:.1f} QPS" if low else "no QPS met the bound")
    chosen = best or last
    dispatch = ctx.session.scheduler()
    metrics = _metrics(chosen["edgecore"], low or qps, bound, dispatch)
    metrics["peak"] = {
        "qps": low or None,
        "latency_bound_ms": bound,
        "probes": probes,
        "method": f"from {start_qps:.3g} QPS, doubling until a probe fails, then bisection until within "
        f"{PEAK_TOLERANCE:.0%} (halving at most {MAX_HALVINGS} times if the first fails); at most {MAX_PROBES} "
        f"probes, each under the stop rule; a probe passes when p99 <= bound and no query failed",
    }
    raw_metrics = None
    if "raw" in chosen:
        raw_metrics = _metrics(chosen["raw"], low or qps, bound, f"run from {settings.concurrency} worker threads")
        passed = [p["target_qps"] for p in raw_probes if p["passed"]]
        raw_metrics["peak"] = {
            "qps": max(passed) if passed else None,
            "latency_bound_ms": bound,
            "probes": raw_probes,
            "method": "the highest of edgecore's probe rates at which the raw runtime passed (same probes, interleaved)",
        }
    return ctx.result(chosen, metrics=metrics, raw_metrics=raw_metrics)
