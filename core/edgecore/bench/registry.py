"""The harness's registries, all filled through the ``edgecore_benchmarks`` hook.

A plugin returns :class:`~edgecore.specs.ScenarioSpec` records; the name says what kind of thing each
one is:

``NAME``             a scenario: ``runner(context: ScenarioContext) -> ScenarioResult | Mapping``
``reporter:NAME``    a reporter: ``runner(report: BenchReport, destination: str) -> None``
``baseline:BACKEND`` the raw runtime that backend BACKEND wraps:
                     ``runner(graph: Graph, options: CompileOptions) -> RawSession``
``dataset:MODEL``    a labelled data set for the accuracy scenario:
                     ``runner() -> (inputs: np.ndarray, labels: np.ndarray)``; MODEL is the zoo
                     model name (or any name ``--dataset`` gives)

Core's own scenarios, reporters and data sets come from :mod:`edgecore.bench.plugin` through the
same hook; the ``cpu_simd`` plugin registers ``baseline:cpu_simd`` (raw onnxruntime).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import attrs

from edgecore.errors import ConfigurationError

if TYPE_CHECKING:
    from edgecore.plugins import PluginManager
    from edgecore.specs import ScenarioSpec

__all__ = [
    "RawSession",
    "KINDS",
    "scenarios",
    "reporters",
    "baselines",
    "datasets",
    "get_scenario",
    "get_reporter",
    "get_baseline",
    "get_dataset",
]

KINDS = ("scenario", "reporter", "baseline", "dataset")


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


def _kind_of(name: str) -> tuple[str, str]:
    prefix, sep, rest = name.partition(":")
    if sep and prefix in KINDS:
        return prefix, rest
    return "scenario", name


def _of_kind(pm: PluginManager, kind: str) -> dict[str, ScenarioSpec]:
    found = {}
    for name, spec in pm.benchmarks().items():
        spec_kind, short = _kind_of(name)
        if spec_kind == kind:
            found[short] = spec
    return found


def scenarios(pm: PluginManager) -> dict[str, ScenarioSpec]:
    """Scenarios by name, in registration order."""
    return _of_kind(pm, "scenario")


def reporters(pm: PluginManager) -> dict[str, ScenarioSpec]:
    return _of_kind(pm, "reporter")


def baselines(pm: PluginManager) -> dict[str, ScenarioSpec]:
    """Raw-runtime baselines by backend name."""
    return _of_kind(pm, "baseline")


def datasets(pm: PluginManager) -> dict[str, ScenarioSpec]:
    return _of_kind(pm, "dataset")


def _get(pm: PluginManager, kind: str, name: str, what: str) -> ScenarioSpec:
    found = _of_kind(pm, kind)
    if name not in found:
        raise ConfigurationError(f"no {what} named {name!r} is registered; registered: {sorted(found) or 'none'}")
    return found[name]


def get_scenario(pm: PluginManager, name: str) -> ScenarioSpec:
    return _get(pm, "scenario", name, "benchmark scenario")


def get_reporter(pm: PluginManager, name: str) -> ScenarioSpec:
    return _get(pm, "reporter", name, "benchmark reporter")


def get_baseline(pm: PluginManager, backend: str) -> ScenarioSpec:
    found = baselines(pm)
    if backend not in found:
        raise ConfigurationError(
            f"backend {backend!r} registers no raw-runtime baseline (a 'baseline:{backend}' record through "
            f"edgecore_benchmarks), so --baseline cannot run; backends with one: {sorted(found) or 'none'}"
        )
    return found[backend]


def get_dataset(pm: PluginManager, name: str) -> ScenarioSpec:
    found = datasets(pm)
    if name not in found:
        raise ConfigurationError(
            f"no labelled data set for {name!r}, so the accuracy scenario cannot run on it; labelled: "
            f"{sorted(found) or 'none'} (pick one with --dataset, or register 'dataset:{name}')"
        )
    return found[name]
