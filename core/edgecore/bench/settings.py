"""How a benchmark runs: durations, query counts, warm-up, load, interleaving. One frozen record.

Derive variants with ``attrs.evolve(settings, duration_s=1.0)``.
"""

from __future__ import annotations

from typing import Any

import attrs

from edgecore.errors import ConfigurationError

__all__ = ["BenchSettings", "DEFAULT_BATCH", "OPTIMIZE_PRESETS"]

#: Batch size a scenario uses when the caller gives none (MLPerf single-stream is batch 1 by definition).
DEFAULT_BATCH = {"offline": 8, "accuracy": 32}


#: ``optimize`` presets: OptimizationConfig fields for ``Engine.optimize`` (graph passes always run).
OPTIMIZE_PRESETS: dict[str, dict[str, Any]] = {
    "graph": {},
    "int8": {"enable_quantization": True},
    "fp16": {"enable_mixed_precision": True},
    "prune": {"enable_pruning": True},
}


def _preset(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None and value not in OPTIMIZE_PRESETS:
        raise ConfigurationError(f"BenchSettings.optimize must be one of {sorted(OPTIMIZE_PRESETS)} or None, got {value!r}")


def _positive(instance: Any, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ConfigurationError(f"BenchSettings.{attribute.name} must be > 0, got {value}")


def _non_negative(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if value < 0:
        raise ConfigurationError(f"BenchSettings.{attribute.name} must be >= 0, got {value}")


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


@attrs.frozen(kw_only=True)
class BenchSettings:
    """Settings shared by every scenario of one benchmark run.

    Measurement: each side (edgecore, and the raw runtime with ``baseline``) is measured until it has
    spent at least ``duration_s`` in measured blocks *and* answered ``min_queries`` kept queries,
    after ``warmup`` queries that are not measured. ``batch`` is the batch size of one query (None:
    the scenario's default: 1, offline 8, accuracy 32).

    Load: ``target_qps`` (server; None = half the rate one worker sustained in warm-up),
    ``find_peak`` with ``latency_bound_ms`` (server: search the highest QPS whose p99 stays under the
    bound), ``streams`` (multi-stream: samples per query), ``concurrency`` (worker threads for server
    and multi-stream when the engine has no scheduler, and for the raw runtime).

    Interleaving (``baseline``): the two sides alternate in blocks of ``block_size`` kept queries,
    and the first ``block_drop`` queries of each block are run but not kept.

    Optimization: ``optimize`` names a preset of :data:`OPTIMIZE_PRESETS`; the engine runs
    ``Engine.optimize`` with it after loading (in cold-start children too, as a stage of its own).
    The raw runtime always runs the original model: the baseline is what a user would run without
    edgecore.

    Cold start: ``cold_runs`` fresh child processes per side. Inputs: random with ``seed``; symbolic
    non-batch dimensions (sequence length) take ``sequence``. Accuracy: ``dataset`` names a labelled
    data set (None: the zoo model's own).
    """

    batch: int | None = attrs.field(default=None, validator=attrs.validators.optional(_positive))
    duration_s: float = attrs.field(default=5.0, converter=float, validator=_positive)
    min_queries: int = attrs.field(default=20, validator=_non_negative)
    warmup: int = attrs.field(default=10, validator=_non_negative)
    target_qps: float | None = attrs.field(default=None, converter=_optional_float, validator=_positive)
    find_peak: bool = False
    latency_bound_ms: float | None = attrs.field(default=None, converter=_optional_float, validator=_positive)
    streams: int = attrs.field(default=4, validator=_positive)
    concurrency: int = attrs.field(default=2, validator=_positive)
    baseline: bool = False
    block_size: int = attrs.field(default=20, validator=_positive)
    block_drop: int = attrs.field(default=3, validator=_non_negative)
    cold_runs: int = attrs.field(default=3, validator=_positive)
    seed: int = 0
    sequence: int = attrs.field(default=128, validator=_positive)
    dataset: str | None = None
    optimize: str | None = attrs.field(default=None, validator=_preset)

    def __attrs_post_init__(self) -> None:
        if self.find_peak and self.latency_bound_ms is None:
            raise ConfigurationError("BenchSettings.find_peak needs latency_bound_ms (the p99 bound the peak must meet)")

    def optimization(self) -> dict[str, Any] | None:
        """OptimizationConfig fields of the ``optimize`` preset, with this run's sequence length and
        seed for the generated check samples (None: no optimization)."""
        if self.optimize is None:
            return None
        return dict(OPTIMIZE_PRESETS[self.optimize], sequence_length=self.sequence, seed=self.seed)

    def batch_for(self, scenario: str) -> int:
        """The batch size ``scenario`` runs at."""
        return self.batch if self.batch is not None else DEFAULT_BATCH.get(scenario, 1)

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)
