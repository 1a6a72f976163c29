"""What a tuning run is asked for: objective, budgets, time limit, the space's bounds. One frozen record.

Units as the CLI writes them are parsed here (:func:`parse_duration`, :func:`parse_bytes`,
:func:`parse_latency`), beside the record and not inside it.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import attrs

from edgecore.errors import ConfigurationError

__all__ = ["TuneSettings", "OBJECTIVES", "parse_duration", "parse_bytes", "parse_latency"]

OBJECTIVES = ("latency", "throughput")

_DURATION = {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_BYTES = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_LATENCY = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _parse(text: str | float, units: dict[str, float], default: str, what: str) -> float:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = (m.group(2) or default).lower() if m else ""
    if not m or unit not in units:
        raise ConfigurationError(f"{what} expects a number with a unit ({', '.join(units)}), got {text!r}")
    return float(m.group(1)) * units[unit]


def parse_duration(text: str | float) -> float:
    """``"10m"``, ``"90s"``, ``"1h"`` or a number of seconds -> seconds."""
    return _parse(text, _DURATION, "s", "a time limit")


def parse_bytes(text: str | float) -> int:
    """``"100MB"``, ``"1.5GiB"`` or a number of bytes -> bytes (MB = 10^6, MiB = 2^20)."""
    return int(_parse(text, _BYTES, "b", "a memory budget"))


def parse_latency(text: str | float) -> float:
    """``"20ms"``, ``"500us"`` or a number of milliseconds -> milliseconds."""
    return _parse(text, _LATENCY, "ms", "a latency budget")


def _positive(instance: Any, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigurationError(f"TuneSettings.{attribute.name} must be > 0, got {value!r}")


def _objective(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if value not in OBJECTIVES:
        raise ConfigurationError(f"TuneSettings.objective must be one of {OBJECTIVES}, got {value!r}")


def _names(value: Any) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    return tuple(v.strip() if isinstance(v, str) else v for v in value)


def _precisions(instance: Any, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    from edgecore.tune.space import PRECISIONS

    unknown = sorted(set(value) - set(PRECISIONS))
    if unknown or not value:
        raise ConfigurationError(f"TuneSettings.precisions must be some of {PRECISIONS}, got {value!r}")


@attrs.frozen(kw_only=True)
class TuneSettings:
    """One tuning run's request.

    ``objective``: ``latency`` (p50 of one query at batch 1) or ``throughput`` (samples/s, with batch
    sizes and scheduler instances searched). Budgets: ``accuracy_budget`` (largest loss: top-1 points
    with labels, else 1 - cosine; None = the optimizer's default), ``memory_budget`` (bytes of PSS
    growth, None = none), ``latency_budget_ms`` (p99 of one query, None = none). ``time_limit_s``
    bounds the whole run. ``backends``/``precisions``/``threads``/``batches`` narrow the space (None:
    everything this machine offers). ``finalists``: how many leaders get a memory reading and the
    final re-measurement; ``group_size``: candidates measured interleaved at once, anchor included;
    ``repeats``: how many times a group measured on a busy machine is measured again.
    ``pass_options``: options of the optimizer's passes by pass name (``{"int8": {"fallback": False}}``),
    as ``OptimizationConfig.custom_options``.
    """

    objective: str = attrs.field(default="latency", validator=_objective)
    accuracy_budget: float | None = attrs.field(default=0.01, validator=_positive)
    memory_budget: int | None = attrs.field(default=None, validator=_positive)
    latency_budget_ms: float | None = attrs.field(default=None, validator=_positive)
    time_limit_s: float = attrs.field(default=600.0, converter=float, validator=_positive)
    backends: tuple[str, ...] | None = attrs.field(default=None, converter=_names)
    precisions: tuple[str, ...] = attrs.field(default=("fp32", "int8", "fp16", "bf16"), converter=_names,
                                              validator=_precisions)
    threads: tuple[int, ...] | None = attrs.field(default=None, converter=_names)
    batches: tuple[int, ...] | None = attrs.field(default=None, converter=_names)
    finalists: int = attrs.field(default=3, validator=_positive)
    group_size: int = attrs.field(default=4, validator=_positive)
    repeats: int = 1
    num_samples: int = attrs.field(default=16, validator=_positive)
    sequence: int = attrs.field(default=128, validator=_positive)
    seed: int = 0
    pass_options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, converter=lambda v: {
        str(k): dict(o) for k, o in (v or {}).items()})

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        for key in ("backends", "precisions", "threads", "batches"):
            data[key] = list(data[key]) if data[key] is not None else None
        return data
