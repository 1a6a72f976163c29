"""The cold-start scenario: process start to first result, and peak memory, from fresh processes.

Each run starts a fresh interpreter (:mod:`edgecore.bench.child`) that imports edgecore and the
backend's runtime, loads the model (for ``zoo:`` models, from the on-disk build cache once built),
compiles it through ``Engine`` (the backend's own graph optimizations included), runs
``Engine.optimize`` when ``settings.optimize`` names a preset, and runs one query:
the parent times that from just before the spawn to reading the first result back. The child then
runs ``warmup`` more queries; its peak RSS, read from outside, minus the peak RSS of a child that only
imports edgecore and the runtime, is the model's peak memory growth.

The import-only child runs once, first (its peak RSS hardly varies). With ``baseline`` each run also
starts a child that does the same through the backend's raw-runtime session; the sides alternate
(edgecore, raw, edgecore, raw, ...), so that a machine that gets busier or quieter affects both alike.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import attrs

from edgecore.bench.child import ChildRun, child_source, run_child
from edgecore.bench.context import ScenarioContext
from edgecore.bench.results import Measured, ScenarioResult

__all__ = ["cold_start", "config_fields", "MEMORY_METHOD"]

MEMORY_METHOD = (
    "peak RSS of the model's child process (after its first result and the warm-up queries) minus the "
    "peak RSS of a child that only imports edgecore and the backend's runtime; read from outside"
)


def config_fields(config: Any) -> dict[str, Any]:
    """EngineConfig fields as JSON-friendly values (what a child process rebuilds it from)."""
    fields = attrs.asdict(config, recurse=False)
    fields["custom_options"] = dict(fields["custom_options"])
    fields["preferred_batch_sizes"] = list(fields["preferred_batch_sizes"])
    return fields


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _stages(runs: list[ChildRun]) -> dict[str, float | None]:
    names = [name for name in runs[0].stages] if runs else []
    return {name: _median([r.stages[name] for r in runs if name in r.stages]) for name in names}


def _memory(runs: list[ChildRun], imports: list[ChildRun]) -> dict[str, Any]:
    peaks = [r.peak_rss_mb - i.peak_rss_mb for r, i in zip(runs, imports)]
    steady = [r.rss_mb - i.rss_mb for r, i in zip(runs, imports)]
    return {
        "peak_growth_mb": _median(peaks),
        "steady_growth_mb": _median(steady),
        "peak_rss_mb": _median([r.peak_rss_mb for r in runs]),
        "import_only_peak_rss_mb": _median([i.peak_rss_mb for i in imports]),
        "method": f"{MEMORY_METHOD} ({runs[0].memory_method if runs else 'no run'}); median over runs",
    }


def _per_run(runs: list[ChildRun], imports: list[ChildRun]) -> list[dict[str, Any]]:
    return [
        {
            "total_ms": r.total_ms,
            "stages_ms": dict(r.stages),
            "peak_rss_mb": r.peak_rss_mb,
            "rss_mb": r.rss_mb,
            "import_only_peak_rss_mb": i.peak_rss_mb,
        }
        for r, i in zip(runs, imports)
    ]


def _metrics(runs: list[ChildRun], imports: list[ChildRun]) -> dict[str, Any]:
    return {
        "runs": len(runs),
        "cold_start_ms": _median([r.total_ms for r in runs]),
        "stages_ms": _stages(runs),
        "memory": _memory(runs, imports),
        "per_run": _per_run(runs, imports),
    }


def _measured(runs: list[ChildRun], batch: int) -> Measured:
    totals = [r.total_ms for r in runs]
    return Measured(queries=len(runs), samples=len(runs) * batch, elapsed_s=sum(totals) / 1e3, latencies_ms=totals)


def cold_start(ctx: ScenarioContext) -> ScenarioResult:
    """Process start to first result (import, load, compile, first inference) in fresh processes,
    ``cold_runs`` times; and peak memory growth over one import-only process. Latency fields hold the
    cold-start times."""
    settings = ctx.settings
    # every child gets the backend by name, so that each imports its runtime in the same stage
    backend = ctx.config.backend if ctx.config.backend != "auto" else ctx.engine.backend
    common = dict(config=config_fields(ctx.config), batch=ctx.batch, seed=settings.seed, sequence=settings.sequence)
    runs: list[ChildRun] = []
    raws: list[ChildRun] = []
    per_run = 2 if ctx.baseline else 1
    steps = 1 + settings.cold_runs * per_run
    with tempfile.TemporaryDirectory(prefix="edgecore-bench-") as folder:
        source = child_source(ctx.source, Path(folder))
        ctx.progress(0.0, "import-only process")
        imported = run_child("import", backend=backend, **common)
        for index in range(settings.cold_runs):
            done = 1 + index * per_run
            ctx.progress(done / steps, f"fresh process {index + 1}/{settings.cold_runs}")
            run = run_child(
                "engine", source=source, backend=backend, steady=settings.warmup, optimize=settings.optimization(), **common
            )
            runs.append(run)
            if ctx.baseline:
                ctx.progress((done + 1) / steps, f"raw runtime process {index + 1}/{settings.cold_runs}")
                raws.append(run_child("raw", source=source, backend=backend, steady=settings.warmup, **common))
    imports = [imported] * settings.cold_runs
    ctx.session.backend_name = ctx.session.backend_name or backend
    ctx.progress(1.0, f"{_median([r.total_ms for r in runs]):.0f} ms")
    measured = {"edgecore": _measured(runs, ctx.batch)}
    metrics = dict(_metrics(runs, imports), backend=backend)
    raw_metrics = raw_runtime = None
    if raws:
        measured["raw"] = _measured(raws, ctx.batch)
        raw_metrics = _metrics(raws, imports)
        raw_runtime = (raws[0].runtime, raws[0].version)
    return ctx.result(measured, metrics=metrics, raw_metrics=raw_metrics, raw_runtime=raw_runtime)
