"""The benchmark harness: MLPerf LoadGen's scenarios, cold start, peak memory, raw-runtime baselines.

Scenarios (``single-stream``, ``offline``, ``server``, ``multi-stream``, ``cold-start``,
``accuracy``), reporters (``json``, ``markdown``, ``plot``), raw-runtime baselines and labelled data
sets are all registered through the ``edgecore_bench_*`` hooks (:mod:`edgecore.bench.registry`
says how), so plugins add their own without touching core::

    from edgecore.bench import BenchSettings, run_benchmark
    from edgecore.bench.report import write_json

    report = run_benchmark("zoo:mobilenet_v2", ["single-stream", "offline"],
                           settings=BenchSettings(duration_s=3, baseline=True))
    print(report.result("single-stream").baseline.ratio["p50"])   # edgecore / onnxruntime
    write_json(report, "mobilenet.json")

The JSON schema and the measuring method are documented in docs/benchmarks.md.

Names are imported on first use, so that importing a submodule (the cold-start child does) costs
only that submodule.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_benchmark": "edgecore.bench.harness",
    "DEFAULT_SCENARIOS": "edgecore.bench.harness",
    "BenchSettings": "edgecore.bench.settings",
    "BenchReport": "edgecore.bench.results",
    "ScenarioResult": "edgecore.bench.results",
    "BaselineResult": "edgecore.bench.results",
    "LatencySummary": "edgecore.bench.results",
    "Measured": "edgecore.bench.results",
    "summarize": "edgecore.bench.results",
    "RawSession": "edgecore.bench.registry",
    "ScenarioContext": "edgecore.bench.context",
    "BenchSession": "edgecore.bench.context",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgecore.bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
