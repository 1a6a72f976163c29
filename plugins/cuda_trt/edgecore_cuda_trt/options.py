"""The tensorrt backend's settings (:class:`TrtOptions`), read from ``CompileOptions``.

Precision is not a builder setting here: networks are built strongly typed (TensorRT 11 removed the
FP16/INT8 builder flags, and 10 accepts strongly typed networks), so a graph runs in the types it
carries. Make it fp16 or int8 with edgecore's passes first (``edgecore optimize --fp16``, the QDQ
INT8 pass); ``precision="fp16"`` here is refused with that advice rather than silently ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import attrs

from edgecore.backend import CompileOptions, check_options
from edgecore.errors import ConfigurationError

__all__ = ["TrtOptions", "KNOWN_OPTIONS", "CACHE_DIR_ENV"]

CACHE_DIR_ENV = "EDGECORE_TENSORRT_CACHE_DIR"

KNOWN_OPTIONS = {
    "device_index": "int >= 0: the CUDA device (default 0)",
    "workspace_bytes": "int > 0: TensorRT's workspace memory pool limit (default: TensorRT's)",
    "builder_optimization_level": "0..5: how hard the builder searches (default: TensorRT's, 3)",
    "profiles": "list of {input: {min: [...], opt: [...], max: [...]}}: explicit optimization profiles",
    "dim_ranges": "{dim name: [min, opt, max]}: ranges of named dynamic dims other than the batch",
    "max_batch_size": "int >= 1: the largest batch a dynamic leading dim takes (default 8, EngineConfig's default)",
    "opt_batch_size": "int >= 1: the batch TensorRT tunes for (default max_batch_size)",
    "cache_dir": "folder of engine plans and timing caches (default $EDGECORE_TENSORRT_CACHE_DIR or edgecore's cache)",
    "cache_max_bytes": "int >= 0: cap of the plan cache (0 = none; default 4 GiB)",
    "engine_cache": "bool: keep built plans (default on)",
    "timing_cache": "bool: reuse and merge the per-SM timing cache (default on)",
    "cuda_graphs": "bool: capture execute_async_v3 per input signature as a CUDA graph (default on)",
    "output_device": "host (numpy outputs) | device (pooled device arrays with __cuda_array_interface__)",
    "dla_core": "int >= 0: build for this DLA core (Jetson) instead of the GPU",
    "gpu_fallback": "bool: with dla_core, run layers the DLA cannot on the GPU (default on)",
    "max_signatures": "int >= 1: input signatures whose buffers (and CUDA graphs) are kept (default 8)",
}

_GRAPH_PRECISIONS = (None, "fp32", "float32", "graph", "auto")


def _int(options: Mapping[str, Any], key: str, default: int | None, minimum: int, maximum: int | None = None) -> int | None:
    value = options.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigurationError(f"tensorrt option {key!r} must be an integer {bound}, got {value!r}")
    return value


def _bool(options: Mapping[str, Any], key: str, default: bool) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise ConfigurationError(f"tensorrt option {key!r} must be true or false, got {value!r}")
    return value


def _dim_ranges(value: Any) -> dict[str, tuple[int, int, int]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"tensorrt option 'dim_ranges' must map dim names to [min, opt, max], got {value!r}")
    ranges = {}
    for name, triple in value.items():
        try:
            low, opt, high = (int(v) for v in triple)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"tensorrt option 'dim_ranges': {name!r} must be [min, opt, max] integers, got {triple!r}"
            ) from None
        if not 0 < low <= opt <= high:
            raise ConfigurationError(f"tensorrt option 'dim_ranges': {name!r} needs 0 < min <= opt <= max, got {triple!r}")
        ranges[str(name)] = (low, opt, high)
    return ranges


@attrs.frozen(kw_only=True)
class TrtOptions:
    """Resolved settings of one compile; :meth:`build_config` is what enters the plan cache key."""

    device_index: int = 0
    workspace_bytes: int | None = None
    builder_optimization_level: int | None = None
    profiles: tuple[Any, ...] | None = None
    dim_ranges: Mapping[str, tuple[int, int, int]] = attrs.field(factory=dict)
    max_batch_size: int = 8
    opt_batch_size: int | None = None
    cache_dir: Path | None = None
    cache_max_bytes: int = 4 << 30
    engine_cache: bool = True
    timing_cache: bool = True
    cuda_graphs: bool = True
    output_device: str = "host"
    dla_core: int | None = None
    gpu_fallback: bool = True
    max_signatures: int = 8
    profile_ops: bool = False

    @classmethod
    def from_compile_options(cls, options: CompileOptions) -> TrtOptions:
        custom = dict(options.options)
        check_options("tensorrt", custom, KNOWN_OPTIONS)
        dla_default = None
        if options.device == "npu":  # Jetson's DLA is the NPU of an NVIDIA board
            dla_default = 0
        elif options.device.startswith("dla:") and options.device[4:].isdigit():
            dla_default = int(options.device[4:])
        elif options.device not in ("auto", "gpu"):
            raise ConfigurationError(
                f"tensorrt runs on NVIDIA GPUs (device 'gpu' or 'auto') and Jetson DLA cores (device 'npu' or "
                f"'dla:N', or custom_options dla_core), not on {options.device!r}"
            )
        precision = options.precision.lower() if isinstance(options.precision, str) else options.precision
        if precision not in _GRAPH_PRECISIONS:
            raise ConfigurationError(
                f"tensorrt builds strongly typed networks: precision comes from the graph, not from {options.precision!r}. "
                "Convert the model first (edgecore optimize --fp16, or the int8 QDQ pass) and load the result"
            )
        output_device = custom.get("output_device", "host")
        if output_device not in ("host", "device"):
            raise ConfigurationError(f"tensorrt option 'output_device' must be 'host' or 'device', got {output_device!r}")
        profiles = custom.get("profiles")
        if profiles is not None and (not isinstance(profiles, (list, tuple)) or not profiles):
            raise ConfigurationError(f"tensorrt option 'profiles' must be a non-empty list of profiles, got {profiles!r}")
        cache_dir = custom.get("cache_dir") or os.environ.get(CACHE_DIR_ENV)
        max_batch, opt_batch = custom.get("max_batch_size", 8), custom.get("opt_batch_size")
        if isinstance(max_batch, int) and isinstance(opt_batch, int) and opt_batch > max_batch:
            raise ConfigurationError(f"tensorrt option 'opt_batch_size' ({opt_batch}) exceeds 'max_batch_size' ({max_batch})")
        return cls(
            device_index=_int(custom, "device_index", 0, 0),
            workspace_bytes=_int(custom, "workspace_bytes", None, 1),
            builder_optimization_level=_int(custom, "builder_optimization_level", None, 0, 5),
            profiles=tuple(profiles) if profiles is not None else None,
            dim_ranges=_dim_ranges(custom.get("dim_ranges")),
            max_batch_size=_int(custom, "max_batch_size", 8, 1),
            opt_batch_size=_int(custom, "opt_batch_size", None, 1),
            cache_dir=Path(cache_dir).expanduser() if cache_dir else None,
            cache_max_bytes=_int(custom, "cache_max_bytes", 4 << 30, 0),
            engine_cache=_bool(custom, "engine_cache", True),
            timing_cache=_bool(custom, "timing_cache", True),
            cuda_graphs=_bool(custom, "cuda_graphs", True),
            output_device=output_device,
            dla_core=_int(custom, "dla_core", dla_default, 0),
            gpu_fallback=_bool(custom, "gpu_fallback", True),
            max_signatures=_int(custom, "max_signatures", 8, 1),
            profile_ops=options.profile_ops,
        )

    def build_config(self, profiles: Any) -> dict[str, Any]:
        """Every setting that changes the built plan (for the cache key), with the profiles used."""
        return {
            "workspace_bytes": self.workspace_bytes,
            "builder_optimization_level": self.builder_optimization_level,
            "profiles": profiles,
            "dla_core": self.dla_core,
            "gpu_fallback": self.gpu_fallback if self.dla_core is not None else None,
            "strongly_typed": True,
            "profiling_verbosity": "detailed" if self.profile_ops else "default",
        }
