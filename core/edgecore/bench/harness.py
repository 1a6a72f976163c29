"""Run benchmark scenarios on one model and collect a :class:`BenchReport`.

>>> from edgecore.bench import BenchSettings, run_benchmark
>>> report = run_benchmark("zoo:mobilenet_v2", ["single-stream"], settings=BenchSettings(duration_s=2))
>>> report.result("single-stream").latency.p50

Scenarios are looked up by name among those registered through ``edgecore_bench_scenarios``
(:mod:`edgecore.bench.registry`), so a third-party scenario runs exactly like a built-in one.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import attrs

from edgecore.bench import registry
from edgecore.bench.coldstart import MEMORY_METHOD, config_fields
from edgecore.bench.context import BenchSession, Progress, ScenarioContext
from edgecore.bench.machine import machine_info, monitor_load
from edgecore.bench.results import BenchReport, ScenarioResult
from edgecore.bench.settings import BenchSettings
from edgecore.errors import ConfigurationError

if TYPE_CHECKING:
    from edgecore.config import EngineConfig
    from edgecore.graph import ModelSource
    from edgecore.plugins import PluginManager

logger = logging.getLogger(__name__)

__all__ = ["run_benchmark", "DEFAULT_SCENARIOS", "ONE_BATCH"]

#: What ``edgecore bench MODEL`` runs when no scenario is named.
DEFAULT_SCENARIOS = ("single-stream", "offline", "cold-start")
#: Scenarios that run once, at the first batch size, when several batch sizes are given.
ONE_BATCH = frozenset({"cold-start", "accuracy"})


def _as_result(name: str, batch: int, description: str, outcome: Any) -> ScenarioResult:
    if isinstance(outcome, ScenarioResult):
        return attrs.evolve(
            outcome,
            scenario=name,
            batch=outcome.batch if outcome.batch is not None else batch,
            description=outcome.description or description,
        )
    if isinstance(outcome, Mapping):
        return ScenarioResult(scenario=name, batch=batch, description=description, metrics=outcome)
    raise ConfigurationError(
        f"benchmark scenario {name!r} returned {type(outcome).__name__}; a runner must return a "
        f"ScenarioResult or a mapping of metrics"
    )


def _model_info(session: BenchSession) -> dict[str, Any]:
    from edgecore.graph import describe_source

    graph = session.graph
    return {
        "source": describe_source(session.source),
        "name": graph.name,
        "fingerprint": graph.fingerprint,
        "parameters": graph.num_parameters,
        "nodes": graph.num_nodes,
        "opset": graph.opset,
        "inputs": [spec.to_json() for spec in graph.inputs],
        "outputs": [spec.to_json() for spec in graph.outputs],
    }


def _method(settings: BenchSettings, session: BenchSession) -> dict[str, Any]:
    interleaving = None
    if settings.baseline:
        interleaving = (
            f"edgecore and the raw runtime in one process, alternating in blocks of {settings.block_size} kept "
            f"queries per side; the first {settings.block_drop} queries of every block run but are not kept"
        )
    return {
        "timer": "time.perf_counter_ns, per query, in the issuing thread (completion callbacks for concurrent queries)",
        "process": "every in-process scenario runs in this one process: compare figures inside one report, "
        "not across processes (fresh processes on a small machine differ by up to 1.7x)",
        "warmup": f"{settings.warmup} unmeasured queries per side before each scenario",
        "stop_rule": f"each side runs until it has >= {settings.duration_s:g} s of measured time and "
        f">= {settings.min_queries} kept queries",
        "interleaving": interleaving,
        "ratios": "edgecore figure / raw runtime figure from the same interleaved run" if settings.baseline else None,
        "server": "Poisson arrivals; latency from each query's due time to its answer",
        "dispatch": session.scheduler(),
        "cold_start": "fresh child process, from just before spawn to the first result read back by the parent",
        "memory": MEMORY_METHOD,
        "baseline_model": "the original model, compiled by the raw runtime with the backend's settings "
        "(edgecore serves it optimized when settings.optimize names a preset)"
        if settings.baseline
        else None,
    }


def run_benchmark(
    source: ModelSource,
    scenarios: Iterable[str] = DEFAULT_SCENARIOS,
    *,
    settings: BenchSettings | None = None,
    config: EngineConfig | None = None,
    batches: Sequence[int] | None = None,
    plugin_manager: PluginManager | None = None,
    progress: Progress | None = None,
    command: str | None = None,
) -> BenchReport:
    """Run ``scenarios`` (registered names) on ``source`` and return the report.

    ``batches`` runs every scenario (but those in :data:`ONE_BATCH`) once per batch size; without it
    each runs at ``settings.batch`` or its own default. ``progress(scenario, fraction, detail)`` is
    called as the work goes on. Raises :class:`~edgecore.errors.ConfigurationError` for an unknown
    scenario before anything runs.
    """
    from edgecore.config import EngineConfig
    from edgecore.plugins import get_plugin_manager

    pm = plugin_manager or get_plugin_manager()
    settings = settings or BenchSettings()
    config = config or EngineConfig()
    names = list(scenarios)
    if not names:
        raise ConfigurationError(f"no scenario given; registered: {sorted(registry.scenarios(pm))}")
    specs = [registry.get_scenario(pm, name) for name in names]
    if batches is not None and (not batches or any(int(b) < 1 for b in batches)):
        raise ConfigurationError(f"batch sizes must be >= 1, got {list(batches)}")
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine = machine_info()
    load = monitor_load(machine, wait_s=60.0 if command else 0.0)  # machine["load"]; the CLI waits for quiet
    started = time.perf_counter()
    session = BenchSession(source, config=config, settings=settings, plugin_manager=pm, progress=progress)
    results: list[ScenarioResult] = []
    try:
        model = _model_info(session)
        for name, spec in zip(names, specs):
            sizes = [int(b) for b in batches] if batches else [settings.batch_for(name)]
            for batch in sizes[:1] if name in ONE_BATCH else sizes:
                logger.info("benchmark %s: scenario %s at batch %d", model["name"], name, batch)
                context = ScenarioContext(session, name, batch=batch, description=spec.description)
                context.progress(0.0, "starting")
                results.append(_as_result(name, batch, spec.description, spec.runner(context)))
                context.progress(1.0, "done")
        method = _method(settings, session)
    finally:
        session.close()
        load.stop()
    return BenchReport(
        model=model,
        backend=session.backend_name or config.backend,
        config=config_fields(config),
        settings=settings.to_json(),
        method=method,
        machine=machine,
        results=results,
        created=created,
        wall_s=time.perf_counter() - started,
        command=command,
        optimization=session.optimization,
    )
