"""Frozen records that plugins return from the registration hooks (one hook per kind of record).

Each record names one thing a plugin brings: a backend, a pass, a zoo model, and for the benchmark
harness a scenario, a reporter, a raw-runtime baseline or a labelled data set. The plugin manager
collects them, sorts them and refuses duplicate names: nothing is renamed silently.

Backend priorities (:attr:`BackendSpec.priority`) follow one scale, so that ``backend="auto"``
picks the most specialised backend that can run a model:

=========  ===========================================================================
priority   backends
=========  ===========================================================================
below 0    debugging and reference backends, never preferred (contrib's ``reference``: -100)
0          the default of a new record: below every real backend
1-19       general-purpose CPU backends (``openvino``: 5, ``cpu_simd`` on ONNX Runtime: 10)
20-49      backends tuned for one vendor's CPUs or integrated GPUs
50-100     accelerators: discrete GPUs, NPUs (a TensorRT backend belongs here)
=========  ===========================================================================

Pick the band for what the backend runs on; within a band, the higher number wins among backends
that run every operator of a model. A plugin that needs a per-model choice implements
``edgecore_select_backend`` instead of raising its priority.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs

__all__ = [
    "PRIORITY_REFERENCE",
    "PRIORITY_PORTABLE_CPU",
    "PRIORITY_VENDOR",
    "PRIORITY_ACCELERATOR",
    "BackendSpec",
    "BaselineSpec",
    "DatasetSpec",
    "ModelSpec",
    "PassSpec",
    "ReporterSpec",
    "ScenarioSpec",
]

#: Lower bounds of the priority bands (see the module docstring).
PRIORITY_REFERENCE = -100
PRIORITY_PORTABLE_CPU = 1
PRIORITY_VENDOR = 20
PRIORITY_ACCELERATOR = 50


def _name(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value or not isinstance(value, str) or any(c.isspace() for c in value):
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be a non-empty word, got {value!r}")


@attrs.frozen(kw_only=True)
class BackendSpec:
    """A backend a plugin provides.

    ``factory`` builds the :class:`~edgecore.backend.Backend` lazily, so that listing backends never
    imports a heavy runtime. Higher ``priority`` wins when ``backend="auto"``; take it from the scale
    in this module's docstring (general-purpose CPU 1-19, vendor-tuned 20-49, accelerators 50-100).
    """

    name: str = attrs.field(validator=_name)
    factory: Callable[[], Any]  # -> edgecore.backend.Backend (not imported: backend.py names this module)
    priority: int = 0
    devices: tuple[str, ...] = attrs.field(default=("cpu",), converter=tuple)
    description: str = ""


@attrs.frozen(kw_only=True)
class PassSpec:
    """An optimization pass a plugin provides.

    ``factory(config)`` returns an ``onnx_ir`` pass. ``stage`` orders passes (``graph``, ``prune``,
    ``precision``, ``quantize``); ``backends`` lists the backends it serves (empty: all). ``exact``
    passes must not change results beyond float rounding.
    """

    name: str = attrs.field(validator=_name)
    factory: Callable[..., Any]
    stage: str = "graph"
    backends: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)
    exact: bool = False
    description: str = ""


@attrs.frozen(kw_only=True)
class ScenarioSpec:
    """A benchmark scenario (``edgecore_bench_scenarios``):
    ``runner(context: edgecore.bench.ScenarioContext) -> ScenarioResult | Mapping``."""

    name: str = attrs.field(validator=_name)
    runner: Callable[..., Any]
    description: str = ""


@attrs.frozen(kw_only=True)
class ReporterSpec:
    """A benchmark reporter (``edgecore_bench_reporters``):
    ``write(report: edgecore.bench.BenchReport, destination: str) -> None``."""

    name: str = attrs.field(validator=_name)
    write: Callable[..., Any]
    description: str = ""


@attrs.frozen(kw_only=True)
class BaselineSpec:
    """The raw runtime a backend wraps, for ``edgecore bench --baseline`` (``edgecore_bench_baselines``).

    ``name`` is the backend's name; ``session(graph: Graph, options: CompileOptions) -> RawSession``
    compiles the model the way the runtime's own users would, with the backend's settings.
    """

    name: str = attrs.field(validator=_name)
    session: Callable[..., Any]
    description: str = ""


@attrs.frozen(kw_only=True)
class DatasetSpec:
    """A labelled data set for the accuracy scenario (``edgecore_bench_datasets``): ``name`` is the
    model it labels (a zoo name, or any name ``--dataset`` gives); ``load() -> (inputs, labels)``."""

    name: str = attrs.field(validator=_name)
    load: Callable[[], Any]
    description: str = ""


@attrs.frozen(kw_only=True)
class ModelSpec:
    """A zoo model: ``builder(seed=..., **options) -> onnx.ModelProto``."""

    name: str = attrs.field(validator=_name)
    builder: Callable[..., Any]
    description: str = ""
    task: str = "classification"
    parameters: int | None = None
