"""The harness's registries: one registration hook, and one record type, per kind of thing.

=============================  ============================  ==================================================
hook                           record                        signature
=============================  ============================  ==================================================
``edgecore_bench_scenarios``   :class:`~edgecore.specs.ScenarioSpec`  ``runner(context: ScenarioContext) -> ScenarioResult | Mapping``
``edgecore_bench_reporters``   :class:`~edgecore.specs.ReporterSpec`  ``write(report: BenchReport, destination: str) -> None``
``edgecore_bench_baselines``   :class:`~edgecore.specs.BaselineSpec`  ``session(graph: Graph, options: CompileOptions) -> RawSession``; named after the backend
``edgecore_bench_datasets``    :class:`~edgecore.specs.DatasetSpec`   ``load() -> (inputs: np.ndarray, labels: np.ndarray)``; named after the model
=============================  ============================  ==================================================

Core's own scenarios, reporters and data sets come from :mod:`edgecore.bench.plugin` through the
same hooks; the ``cpu_simd`` plugin registers the ``cpu_simd`` baseline (raw onnxruntime).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import attrs

from edgecore.errors import ConfigurationError

if TYPE_CHECKING:
    from edgecore.plugins import PluginManager
    from edgecore.specs import BaselineSpec, DatasetSpec, ReporterSpec, ScenarioSpec

__all__ = [
    "RawSession",
    "HOOKS",
    "scenarios",
    "reporters",
    "baselines",
    "datasets",
    "get_scenario",
    "get_reporter",
    "get_baseline",
    "get_dataset",
]

#: Kind of record (as ``edgecore bench --list`` names it) -> its registration hook.
HOOKS = {
    "scenarios": "edgecore_bench_scenarios",
    "reporters": "edgecore_bench_reporters",
    "baselines": "edgecore_bench_baselines",
    "datasets": "edgecore_bench_datasets",
}


def _noop() -> None:
    return None


@attrs.frozen(kw_only=True)
class RawSession:
    """A model compiled by a raw runtime, as its own users would call it, for ``--baseline``.

    ``run(feeds)`` runs one request (feeds: input name -> numpy array) and returns the outputs;
    ``close()`` releases it. ``runtime``/``version`` name the runtime (e.g. onnxruntime 1.32.0);
    ``settings`` says how the session was configured (it should match the backend's).
    """

    runtime: str
    version: str
    run: Callable[[Mapping[str, Any]], Any]
    close: Callable[[], None] = _noop
    settings: Mapping[str, Any] = attrs.field(factory=dict)


def scenarios(pm: PluginManager) -> dict[str, ScenarioSpec]:
    """Scenarios by name, in registration order."""
    return pm.bench_scenarios()


def reporters(pm: PluginManager) -> dict[str, ReporterSpec]:
    return pm.bench_reporters()


def baselines(pm: PluginManager) -> dict[str, BaselineSpec]:
    """Raw-runtime baselines by backend name."""
    return pm.bench_baselines()


def datasets(pm: PluginManager) -> dict[str, DatasetSpec]:
    return pm.bench_datasets()


def _get(found: dict[str, Any], name: str, what: str) -> Any:
    if name not in found:
        raise ConfigurationError(f"no {what} named {name!r} is registered; registered: {sorted(found) or 'none'}")
    return found[name]


def get_scenario(pm: PluginManager, name: str) -> ScenarioSpec:
    return _get(scenarios(pm), name, "benchmark scenario")


def get_reporter(pm: PluginManager, name: str) -> ReporterSpec:
    return _get(reporters(pm), name, "benchmark reporter")


def get_baseline(pm: PluginManager, backend: str) -> BaselineSpec:
    found = baselines(pm)
    if backend not in found:
        raise ConfigurationError(
            f"backend {backend!r} registers no raw-runtime baseline (a BaselineSpec named {backend!r} through "
            f"edgecore_bench_baselines), so --baseline cannot run; backends with one: {sorted(found) or 'none'}"
        )
    return found[backend]


def get_dataset(pm: PluginManager, name: str) -> DatasetSpec:
    found = datasets(pm)
    if name not in found:
        raise ConfigurationError(
            f"no labelled data set for {name!r}, so the accuracy scenario cannot run on it; labelled: "
            f"{sorted(found) or 'none'} (pick one with --dataset, or register a DatasetSpec named {name!r} "
            f"through edgecore_bench_datasets)"
        )
    return found[name]
