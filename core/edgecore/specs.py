"""Frozen records that plugins return from the registration hooks.

Each record names one thing a plugin brings (a backend, a pass, a benchmark scenario, a zoo model).
The plugin manager collects them, sorts them and refuses duplicate names: nothing is renamed silently.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs

__all__ = ["BackendSpec", "PassSpec", "ScenarioSpec", "ModelSpec"]


def _name(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value or not isinstance(value, str) or any(c.isspace() for c in value):
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be a non-empty word, got {value!r}")


@attrs.frozen(kw_only=True)
class BackendSpec:
    """A backend a plugin provides.

    ``factory`` builds the :class:`~edgecore.backend.Backend` lazily, so that listing backends never
    imports a heavy runtime. Higher ``priority`` wins when ``backend="auto"``.
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
    """A benchmark scenario (or reporter) for the harness: ``runner(context) -> result``."""

    name: str = attrs.field(validator=_name)
    runner: Callable[..., Any]
    description: str = ""


@attrs.frozen(kw_only=True)
class ModelSpec:
    """A zoo model: ``builder(seed=..., **options) -> onnx.ModelProto``."""

    name: str = attrs.field(validator=_name)
    builder: Callable[..., Any]
    description: str = ""
    task: str = "classification"
    parameters: int | None = None
