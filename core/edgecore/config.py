"""Engine configuration, with the seed's names (``max_memory_usage``, ``enable_dynamic_batching``...)
and Triton's scheduling vocabulary (``max_batch_size``, ``preferred_batch_sizes``,
``max_queue_delay_us``, ``instances``).

Derive variants with ``attrs.evolve(config, num_threads=1)``.
"""

from __future__ import annotations

import os
from types import MappingProxyType
from typing import Any, Mapping

import attrs

from edgecore.backend import GRAPH_OPTIMIZATION_LEVELS, MEMORY_MODES, CompileOptions
from edgecore.errors import ConfigurationError

__all__ = ["EngineConfig", "DEVICES"]

DEVICES = ("auto", "cpu", "gpu", "npu")


def _at_least(minimum: int):
    def check(instance: Any, attribute: attrs.Attribute, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            raise ConfigurationError(f"EngineConfig.{attribute.name} must be a number >= {minimum}, got {value!r}")

    return check


def _one_of(choices: tuple[str, ...]):
    def check(instance: Any, attribute: attrs.Attribute, value: str) -> None:
        if value not in choices:
            raise ConfigurationError(f"EngineConfig.{attribute.name} must be one of {choices}, got {value!r}")

    return check


def _sizes(value: Any) -> tuple[int, ...]:
    try:
        return tuple(sorted({int(v) for v in value}))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"EngineConfig.preferred_batch_sizes must be integers, got {value!r}") from exc


def _mapping(value: Any) -> Mapping[str, Any]:
    if value is not None and not isinstance(value, Mapping):
        raise ConfigurationError(f"EngineConfig.custom_options must be a mapping, got {type(value).__name__}")
    return MappingProxyType(dict(value or {}))


@attrs.frozen(kw_only=True)
class EngineConfig:
    """How an :class:`~edgecore.Engine` loads, compiles and serves a model.

    Backend: ``backend`` ("auto" = best available by priority and op coverage, or a registered name),
    ``device`` (auto, cpu, gpu, npu), ``num_threads``/``inter_op_threads`` (0 = runtime default),
    ``graph_optimization_level`` (the runtime's own optimizer), ``enable_hardware_acceleration``
    (SIMD-specific layouts and kernels), ``precision`` (backend precision hint, e.g. "bf16"),
    ``profile_ops`` (per-operator timings into the profiler), ``custom_options`` (backend-specific).

    Memory: ``enable_memory_pool``, ``max_memory_usage`` (bytes, 0 = unlimited), ``pool_size``
    (idle bytes kept for reuse, 0 = unlimited), ``memory_alignment``, ``memory_mode`` ("balanced",
    or "min": backends turn off what trades memory for speed, e.g. cpu_simd's pre-packed weights
    and arena).

    Caches: ``cache_dir`` (None: ``$EDGECORE_CACHE_DIR``, else ``~/.cache/edgecore``) holds the
    compiled-artifact cache (:mod:`edgecore.cache`) and models converted to external data;
    ``cache_max_bytes`` caps it (least recently used entries go first; 0 = no cap).

    Scheduling (used by ``submit``/``run_async``, and by ``run`` when ``enable_dynamic_batching``):
    ``max_batch_size``, ``preferred_batch_sizes``, ``max_queue_delay_us``, ``priority_levels``,
    ``default_timeout_ms`` (0 = none), ``max_queue_size`` (0 = unbounded), ``instances``,
    ``adaptive_batching``.
    """

    backend: str = "auto"
    device: str = attrs.field(default="auto", validator=_one_of(DEVICES))
    num_threads: int = attrs.field(default=0, validator=_at_least(0))
    inter_op_threads: int = attrs.field(default=0, validator=_at_least(0))
    graph_optimization_level: str = attrs.field(default="all", validator=_one_of(GRAPH_OPTIMIZATION_LEVELS))
    enable_hardware_acceleration: bool = True
    precision: str | None = None
    profile_ops: bool = False
    custom_options: Mapping[str, Any] = attrs.field(factory=dict, converter=_mapping)

    enable_memory_pool: bool = True
    max_memory_usage: int = attrs.field(default=0, validator=_at_least(0))
    pool_size: int = attrs.field(default=0, validator=_at_least(0))
    memory_alignment: int = attrs.field(default=64, validator=_at_least(1))
    memory_mode: str = attrs.field(default="balanced", validator=_one_of(MEMORY_MODES))

    cache_dir: str | os.PathLike | None = None
    cache_max_bytes: int = attrs.field(default=4 << 30, validator=_at_least(0))

    enable_dynamic_batching: bool = False
    max_batch_size: int = attrs.field(default=8, validator=_at_least(1))
    preferred_batch_sizes: tuple[int, ...] = attrs.field(default=(), converter=_sizes)
    max_queue_delay_us: int = attrs.field(default=500, validator=_at_least(0))
    priority_levels: int = attrs.field(default=1, validator=_at_least(1))
    default_timeout_ms: float = attrs.field(default=0.0, validator=_at_least(0))
    max_queue_size: int = attrs.field(default=0, validator=_at_least(0))
    instances: int = attrs.field(default=1, validator=_at_least(1))
    adaptive_batching: bool = True

    def __attrs_post_init__(self) -> None:
        too_big = [b for b in self.preferred_batch_sizes if b > self.max_batch_size or b < 1]
        if too_big:
            raise ConfigurationError(
                f"EngineConfig.preferred_batch_sizes {too_big} must lie in 1..max_batch_size={self.max_batch_size}"
            )

    def compile_options(self, **overrides: Any) -> CompileOptions:
        """The :class:`CompileOptions` this config asks of a backend (fields of the same name)."""
        return CompileOptions.from_config(self, **overrides)

    def instance_options(self, memory_pool: Any = None) -> CompileOptions:
        """The options each of ``instances`` compiled models gets: with more than one and no thread
        count given, the cores are shared out and the backend is told its instances share them."""
        if self.instances == 1:
            return self.compile_options(memory_pool=memory_pool)
        threads = self.num_threads or max(1, (os.cpu_count() or 1) // self.instances)
        return self.compile_options(memory_pool=memory_pool, num_threads=threads, shared_cores=True)
