"""Parsing ONNX into TensorRT networks, asking the parser what it cannot run, and building plans.

Written against the TensorRT 10 and 11 Python API: networks are created strongly typed
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; TensorRT 11 keeps the flag, always on), the
``OnnxParser`` parses bytes with the model's path for external weights, support is asked with
``supports_model_v2`` (``supports_operator`` where a TensorRT 10 lacks it), and plans come from
``build_serialized_network`` with the optimization profiles and the shared timing cache.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Sequence

from edgecore.errors import BackendExecutionError, BackendUnavailableError, ModelLoadError, UnsupportedOperatorError
from edgecore_cuda_trt.cache import TimingCacheFile
from edgecore_cuda_trt.options import TrtOptions
from edgecore_cuda_trt.profiles import Profile

logger = logging.getLogger(__name__)

__all__ = ["trt_module", "trt_logger", "unsupported_nodes", "build_plan"]


@functools.cache
def trt_module() -> Any:
    import tensorrt

    return tensorrt


@functools.cache
def trt_logger() -> Any:
    trt = trt_module()
    return trt.Logger(trt.Logger.WARNING)


def _network(builder: Any) -> Any:
    trt = trt_module()
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:
        flags |= 1 << int(strongly_typed)
    return builder.create_network(flags)


def _errors(parser: Any) -> list[str]:
    return [str(parser.get_error(i)) for i in range(parser.num_errors)]


def unsupported_nodes(model: bytes, path: str | None, node_ops: Sequence[str]) -> list[str]:
    """Operator names of the nodes TensorRT's ONNX parser reports it cannot run (sorted, unique).

    ``node_ops[i]`` is the operator of node ``i`` in the serialized graph (the parser's indices).
    """
    trt = trt_module()
    builder = trt.Builder(trt_logger())
    parser = trt.OnnxParser(_network(builder), trt_logger())
    if not hasattr(parser, "supports_model_v2"):
        return sorted({op for op in set(node_ops) if not parser.supports_operator(op)})
    if parser.supports_model_v2(model, path):
        return []
    failed = set()
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        node = error.node()
        if 0 <= node < len(node_ops):
            failed.add(node_ops[node])
        elif error.node_operator():
            failed.add(error.node_operator())
    if not failed:  # no per-node errors: name the nodes of the subgraphs it refused
        for index in range(parser.num_subgraphs):
            if not parser.is_subgraph_supported(index):
                failed.update(node_ops[n] for n in parser.get_subgraph_nodes(index) if n < len(node_ops))
    return sorted(failed)


def _config(builder: Any, network: Any, settings: TrtOptions, profiles: Sequence[Profile]) -> tuple[Any, list]:
    trt = trt_module()
    config = builder.create_builder_config()
    if settings.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    if settings.builder_optimization_level is not None:
        config.builder_optimization_level = settings.builder_optimization_level
    if settings.profile_ops:
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    for profile in profiles:
        optimization = builder.create_optimization_profile()
        for name, (low, opt, high) in profile.items():
            optimization.set_shape(name, low, opt, high)
        config.add_optimization_profile(optimization)
    placement = []
    if settings.dla_core is not None:
        if settings.dla_core >= builder.num_DLA_cores:
            raise BackendUnavailableError(
                f"tensorrt: DLA core {settings.dla_core} asked for, this device has {builder.num_DLA_cores}"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = settings.dla_core
        if settings.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            placement.append({"layer": layer.name, "type": str(layer.type), "device": "dla" if config.can_run_on_DLA(layer) else "gpu"})
        on_gpu = [p["layer"] for p in placement if p["device"] == "gpu"]
        if on_gpu and not settings.gpu_fallback:
            raise UnsupportedOperatorError(
                f"tensorrt: layers {on_gpu[:10]}{'...' if len(on_gpu) > 10 else ''} cannot run on the DLA and "
                "gpu_fallback is off",
                ops=tuple(sorted({p['type'] for p in placement if p['device'] == 'gpu'})),
            )
    return config, placement


def _combine(config: Any, on_disk: bytes, learned: bytes) -> bytes:
    base = config.create_timing_cache(on_disk)
    if not base.combine(config.create_timing_cache(learned), False):
        logger.warning("tensorrt: the timing cache on disk does not match this device; replacing it")
        return learned
    return bytes(base.serialize())


def build_plan(
    model: bytes, path: str | None, settings: TrtOptions, profiles: Sequence[Profile], timing: TimingCacheFile | None
) -> tuple[bytes, list[dict[str, str]]]:
    """A serialized plan for ``model`` and, for DLA builds, where each layer runs."""
    trt = trt_module()
    builder = trt.Builder(trt_logger())
    network = _network(builder)
    parser = trt.OnnxParser(network, trt_logger())
    if not parser.parse(model, path):
        raise ModelLoadError("TensorRT's ONNX parser refused the model: " + "; ".join(_errors(parser)[:5]))
    config, placement = _config(builder, network, settings, profiles)
    if timing is not None:
        cache = config.create_timing_cache(timing.read())
        if not config.set_timing_cache(cache, False):
            logger.warning("tensorrt: timing cache %s does not match this device; building without it", timing.path)
            config.set_timing_cache(config.create_timing_cache(b""), False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendExecutionError("TensorRT could not build an engine for the model (see its log above)", backend="tensorrt")
    if timing is not None:
        learned = bytes(config.get_timing_cache().serialize())
        timing.merge(learned, lambda on_disk, new: _combine(config, on_disk, new))
    return bytes(plan), placement
