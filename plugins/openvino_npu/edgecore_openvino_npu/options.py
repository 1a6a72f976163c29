"""From edgecore's :class:`~edgecore.backend.CompileOptions` to OpenVINO's compile properties.

What a user can say, and where it goes:

==========================  ===========================================================================
``EngineConfig`` field       OpenVINO property
==========================  ===========================================================================
``device``                   the device (``cpu`` -> ``CPU``, ``npu`` -> ``NPU``, ``auto`` -> the only
                             device, or ``AUTO`` when there are several)
``num_threads``              ``INFERENCE_NUM_THREADS`` (devices that have it; 0 = OpenVINO's choice)
``precision``                ``INFERENCE_PRECISION_HINT``: ``f32`` (default), ``bf16``, ``f16``, or
                             ``default`` (the device's own choice, e.g. bf16 on AMX/AVX512-BF16 CPUs)
``profile_ops``              ``PERF_COUNT``
==========================  ===========================================================================

``custom_options`` keys: ``performance_hint`` (latency, throughput, cumulative_throughput),
``num_streams`` (int or ``"auto"``), ``num_requests`` (``PERFORMANCE_HINT_NUM_REQUESTS``),
``cache_dir`` (path; ``None``/``False`` turns caching off), ``static_buckets`` (``True`` or
``{dimension: [sizes]}``; on by default on the NPU), ``npu_optimization`` (``default`` or
``aggressive``: NPU turbo), ``device_name`` (an exact OpenVINO device: ``GPU.1``, ``AUTO:NPU,CPU``),
and any OpenVINO property in upper case (``"ENABLE_CPU_PINNING": False``), checked against the
device's ``SUPPORTED_PROPERTIES``.

``inter_op_threads``, ``graph_optimization_level`` and ``enable_hardware_acceleration`` have no
OpenVINO counterpart and are ignored (OpenVINO always runs its own graph transformations).

``shared_cores`` on the CPU (the engine's ``instances`` > 1: each instance is a compiled model of
its own, given ``num_threads`` = cores / instances): each gets ``NUM_STREAMS`` 1 (the instances are
the parallelism; a throughput hint would give each of them streams over all cores) and
``ENABLE_CPU_PINNING`` False: every compiled model places its stream threads without knowing the
others (``ENABLE_CPU_RESERVATION`` is off), so pinned instances can land on the same cores (Intel's
note 000058227: two pinned processes at half speed). An explicit ``num_streams`` or
``ENABLE_CPU_PINNING`` wins. ONNX Runtime's other remedy, no spin-waiting, has no OpenVINO setting.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import attrs

from edgecore.backend import CompileOptions
from edgecore.errors import ConfigurationError

from edgecore_openvino_npu import _ov
from edgecore_openvino_npu.devices import kind_of, resolve_device

logger = logging.getLogger(__name__)

__all__ = ["OvSettings", "resolve", "PRECISIONS", "HINTS", "KNOWN_OPTIONS"]

PRECISIONS = {
    "f32": "f32", "fp32": "f32", "float32": "f32", "float": "f32",
    "bf16": "bf16", "bfloat16": "bf16",
    "f16": "f16", "fp16": "f16", "float16": "f16",
    "default": None, "auto": None,
}
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT", "cumulative_throughput": "CUMULATIVE_THROUGHPUT"}
NPU_OPTIMIZATION = {"default": {}, "aggressive": {"NPU_TURBO": True}}
KNOWN_OPTIONS = (
    "performance_hint", "num_streams", "num_requests", "cache_dir", "static_buckets", "npu_optimization",
    "device_name",
)
#: Properties of ov.Core itself, accepted on every device.
_CORE_PROPERTIES = frozenset({"CACHE_DIR", "CACHE_MODE", "ENABLE_MMAP", "LOG_LEVEL", "FORCE_TBB_TERMINATE"})


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@attrs.frozen(kw_only=True)
class OvSettings:
    """Everything a compile needs, resolved and checked.

    ``buckets`` maps each dynamic dimension name to its sizes (None: compile the dynamic model).
    ``cache_dir`` is the folder for this graph's blobs (None: no caching).
    """

    device: str
    kind: str
    properties: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen)
    cache_dir: Path | None = None
    buckets: Mapping[str, tuple[int, ...]] | bool | None = None
    precision: str | None = None


def _supported(device: str) -> dict[str, str]:
    """``{property: "RW"|"RO"|"WO"}`` for ``device``; for a virtual device, itself plus its candidates."""
    core = _ov.core()
    names = [device.split(":", 1)[0]]
    if ":" in device:
        names += [d for d in device.split(":", 1)[1].split(",") if d]
    elif kind_of(device) == "auto":
        names += [str(d) for d in core.available_devices]
    found: dict[str, str] = {}
    for name in names:
        try:
            props = core.get_property(name, "SUPPORTED_PROPERTIES")
        except Exception as exc:
            logger.debug("no SUPPORTED_PROPERTIES for %s: %r", name, exc)
            continue
        for key, mode in dict(props).items():
            if found.get(key) != "RW":
                found[key] = str(mode)
    return found


def _hint(value: Any) -> str:
    key = str(value).strip().lower()
    if key not in HINTS and str(value).upper() not in HINTS.values():
        raise ConfigurationError(f"openvino option performance_hint must be one of {sorted(HINTS)}, got {value!r}")
    return HINTS.get(key, str(value).upper())


def _positive_int(name: str, value: Any, *, allow_auto: bool = False) -> int | str:
    if allow_auto and isinstance(value, str) and value.lower() == "auto":
        return "AUTO"
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "num_requests" else 1):
        floor = "0" if name == "num_requests" else "1"
        auto = " or 'auto'" if allow_auto else ""
        raise ConfigurationError(f"openvino option {name} must be an int >= {floor}{auto}, got {value!r}")
    return value


def _buckets(value: Any) -> Mapping[str, tuple[int, ...]] | bool:
    if isinstance(value, bool):
        return value
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"openvino option static_buckets must be True/False or {{dimension name: [sizes]}}, got {value!r}"
        )
    out = {}
    for dim, sizes in value.items():
        try:
            sizes = tuple(sorted({int(s) for s in ([sizes] if isinstance(sizes, int) else sizes)}))
        except (TypeError, ValueError):
            sizes = ()
        if not sizes or sizes[0] < 1:
            raise ConfigurationError(
                f"openvino option static_buckets[{dim!r}] must be positive sizes, e.g. [1, 2, 4, 8], got {value[dim]!r}"
            )
        out[str(dim)] = sizes
    return MappingProxyType(out)


def resolve(options: CompileOptions, fingerprint: str) -> OvSettings:
    """Check ``options`` and turn them into :class:`OvSettings` (raises ConfigurationError)."""
    custom = dict(options.options)
    device = resolve_device(options.device, custom.pop("device_name", None))
    kind = kind_of(device)
    supported = _supported(device)
    props: dict[str, Any] = {}

    requested = options.precision
    if requested is not None and str(requested).lower() not in PRECISIONS:
        raise ConfigurationError(
            f"openvino precision must be one of {sorted(set(PRECISIONS))}, got {requested!r}"
            + ("; INT8 is a graph pass (openvino_int8), not a precision hint" if "int8" in str(requested).lower() else "")
        )
    precision = PRECISIONS[str(requested).lower()] if requested is not None else ("f32" if kind != "npu" else None)
    if precision is not None:
        props["INFERENCE_PRECISION_HINT"] = precision
    if options.num_threads and ("INFERENCE_NUM_THREADS" in supported or kind == "auto"):
        props["INFERENCE_NUM_THREADS"] = options.num_threads
    elif options.num_threads:
        logger.info("openvino: %s has no INFERENCE_NUM_THREADS; num_threads=%d ignored", device, options.num_threads)
    props["PERFORMANCE_HINT"] = _hint(custom.pop("performance_hint", "latency"))
    if "num_streams" in custom:
        props["NUM_STREAMS"] = _positive_int("num_streams", custom.pop("num_streams"), allow_auto=True)
    if "num_requests" in custom:
        props["PERFORMANCE_HINT_NUM_REQUESTS"] = _positive_int("num_requests", custom.pop("num_requests"))
    if options.profile_ops:
        props["PERF_COUNT"] = True
    if options.shared_cores and kind == "cpu":  # upper-case keys in custom_options, applied below, win
        if "NUM_STREAMS" not in props and "NUM_STREAMS" in supported:
            props["NUM_STREAMS"] = 1
        if supported.get("ENABLE_CPU_PINNING") == "RW":
            props["ENABLE_CPU_PINNING"] = False

    npu_mode = custom.pop("npu_optimization", "default")
    if npu_mode not in NPU_OPTIMIZATION:
        raise ConfigurationError(
            f"openvino option npu_optimization must be one of {sorted(NPU_OPTIMIZATION)}, got {npu_mode!r}"
        )
    if kind == "npu":
        props.update(NPU_OPTIMIZATION[npu_mode])
    elif npu_mode != "default":
        logger.info("openvino: npu_optimization=%r applies to the NPU only; %s ignores it", npu_mode, device)

    buckets = _buckets(custom.pop("static_buckets", kind == "npu"))
    cache_dir = _cache_dir(custom.pop("cache_dir", True), fingerprint)

    for key, value in custom.items():
        if not key.isupper():
            raise ConfigurationError(
                f"openvino does not know option {key!r}; known: {list(KNOWN_OPTIONS)}, or an OpenVINO property "
                f"in upper case that {device} supports: {sorted(k for k, m in supported.items() if m != 'RO')}"
            )
        mode = supported.get(key)
        if mode is None and key not in _CORE_PROPERTIES:
            raise ConfigurationError(
                f"openvino: device {device} does not support property {key!r}; its settable properties: "
                f"{sorted(k for k, m in supported.items() if m != 'RO')}"
            )
        if mode == "RO":
            raise ConfigurationError(f"openvino: property {key!r} of {device} is read-only")
        props[key] = value
    for key in [k for k in props if k not in supported and k not in _CORE_PROPERTIES and kind != "auto"]:
        if key in ("PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT", "PERF_COUNT") and supported:
            logger.info("openvino: %s has no property %s; not set", device, key)
            props.pop(key)
    return OvSettings(device=device, kind=kind, properties=props, cache_dir=cache_dir, buckets=buckets,
                      precision=precision)


def _cache_dir(value: Any, fingerprint: str) -> Path | None:
    """The blob folder for this graph: ``<root>/<openvino version>/<fingerprint[:16]>``."""
    if value is None or value is False:
        return None
    root = _ov.cache_root() if value is True else Path(str(value)).expanduser()
    folder = root / _ov.short_version() / fingerprint[:16]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only home costs a recompile, never a failure
        logger.warning("openvino: cannot create cache folder %s (%r); compiling without a cache", folder, exc)
        return None
    return folder
