"""The ``tensorrt`` backend: NVIDIA TensorRT 10.x / 11.x on CUDA GPUs (and Jetson DLA cores).

``compile``: optimization profiles from the model's dynamic dimensions (:mod:`.profiles`), a plan
from the cache or built (:mod:`.build`, :mod:`.cache`), deserialized (a plan that will not
deserialize is dropped and rebuilt), and a :class:`~edgecore_cuda_trt.compiled.TrtCompiledModel`.
Nothing here imports TensorRT or cuda-python until asked: without them the plugin still loads and
says why it is unavailable.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecore.backend import Availability, Backend, CompileOptions, DeviceInfo, op_name
from edgecore.errors import BackendUnavailableError, UnsupportedOperatorError

if TYPE_CHECKING:
    from edgecore.graph import Graph

logger = logging.getLogger(__name__)

__all__ = ["TensorRTBackend", "SUPPORTED_MAJORS"]

SUPPORTED_MAJORS = (10, 11)

INSTALL_HINT = (
    "pip install tensorrt cuda-python (TensorRT's wheels download from NVIDIA's package index; on Jetson "
    "it comes with JetPack)"
)


def _major(version: str) -> int:
    try:
        return int(version.split(".", 1)[0])
    except ValueError:
        return -1


def runtime_availability() -> Availability:
    """Whether TensorRT, cuda-python and a CUDA device are here; the reason when not."""
    if importlib.util.find_spec("tensorrt") is None:
        return Availability(ok=False, reason=f"tensorrt is not installed; {INSTALL_HINT}")
    try:
        from edgecore_cuda_trt.build import trt_module

        trt = trt_module()
    except Exception as exc:  # a stub wheel, missing libnvinfer, ...
        return Availability(ok=False, reason=f"tensorrt is installed but does not import ({exc!r}); {INSTALL_HINT}")
    if _major(trt.__version__) not in SUPPORTED_MAJORS:
        return Availability(ok=False, reason=f"tensorrt {trt.__version__} is not supported; need 10.x or 11.x")
    if importlib.util.find_spec("cuda") is None:
        return Availability(ok=False, reason="cuda-python is not installed; pip install cuda-python")
    try:
        from edgecore_cuda_trt.cuda import device_count

        count = device_count()
    except Exception as exc:
        return Availability(ok=False, reason=f"cuda-python cannot reach the CUDA runtime ({exc!r})")
    if not count:
        return Availability(ok=False, reason="no CUDA device is visible (driver missing, or CUDA_VISIBLE_DEVICES empty)")
    return Availability(ok=True)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def availability(self) -> Availability:
        return runtime_availability()

    def devices(self) -> list[DeviceInfo]:
        from edgecore_cuda_trt.build import trt_logger, trt_module
        from edgecore_cuda_trt.cuda import device_count, gpu_facts

        trt = trt_module()
        found = []
        for index in range(device_count()):
            facts = gpu_facts(index)
            found.append(
                DeviceInfo(
                    name=f"cuda:{index}",
                    kind="gpu",
                    description=facts.name,
                    properties={
                        "compute_capability": facts.compute_capability,
                        "cuda_runtime": facts.cuda_runtime,
                        "driver": facts.driver,
                        "tensorrt": trt.__version__,
                    },
                )
            )
        dla = trt.Builder(trt_logger()).num_DLA_cores
        found.extend(DeviceInfo(name=f"dla:{i}", kind="npu", description="NVIDIA DLA core") for i in range(dla))
        return found

    def unsupported_ops(self, graph: Graph) -> list[str]:
        if not self.availability().ok:  # it runs nothing here (availability says why)
            return sorted({op_name(domain, op) for domain, op in graph.op_types()})
        return list(_unsupported(graph))

    def compile(self, graph: Graph, options: CompileOptions) -> Any:
        availability = self.availability()
        if not availability.ok:
            raise BackendUnavailableError(f"backend 'tensorrt' is unavailable: {availability.reason}")
        from edgecore.cache import ArtifactCache
        from edgecore_cuda_trt.build import build_plan, trt_logger, trt_module
        from edgecore_cuda_trt.cache import TimingCacheFile, default_root, plan_key
        from edgecore_cuda_trt.compiled import TrtCompiledModel
        from edgecore_cuda_trt.cuda import check, cudart, gpu_facts
        from edgecore_cuda_trt.options import TrtOptions
        from edgecore_cuda_trt.profiles import compute_profiles, to_json

        settings = TrtOptions.from_compile_options(options)
        missing = self.unsupported_ops(graph)
        if missing:
            raise UnsupportedOperatorError(f"{graph.name}: TensorRT cannot run {missing}", ops=tuple(missing))
        trt = trt_module()
        check(cudart().cudaSetDevice(settings.device_index), "cudaSetDevice")
        gpu = gpu_facts(settings.device_index)
        profiles = compute_profiles(
            graph.inputs,
            max_batch_size=settings.max_batch_size,
            opt_batch_size=settings.opt_batch_size,
            dim_ranges=settings.dim_ranges,
            profiles=settings.profiles,
        )
        model, path = graph.to_bytes(), _model_path(graph)
        root = settings.cache_dir or default_root()
        timing = TimingCacheFile.for_gpu(root, gpu, _major(trt.__version__)) if settings.timing_cache else None
        key = plan_key(graph.fingerprint, trt.__version__, gpu, settings.build_config(to_json(profiles)))
        placement: list = []

        def build(folder: Path) -> dict[str, Any]:
            plan, layers = build_plan(model, path, settings, profiles, timing)
            (folder / "engine.plan").write_bytes(plan)
            placement[:] = layers
            return {"gpu": gpu.describe(), "tensorrt": trt.__version__, "placement": layers}

        runtime = trt.Runtime(trt_logger())
        engine = None
        if settings.engine_cache:
            cache = ArtifactCache(root / "plans", max_bytes=settings.cache_max_bytes)
            for attempt in (1, 2):
                entry = cache.get_or_build(key, build)
                engine = runtime.deserialize_cuda_engine(entry.file("engine.plan").read_bytes())
                if engine is not None:
                    placement[:] = entry.metadata.get("placement", placement)
                    break
                logger.warning("tensorrt: cached plan %s does not deserialize; rebuilding it", entry.path)
                shutil.rmtree(entry.path, ignore_errors=True)
        else:
            plan, placement = build_plan(model, path, settings, profiles, timing)
            engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise BackendUnavailableError(f"tensorrt could not deserialize the plan it built for {graph.name} on {gpu.describe()}")
        budget = options.memory_pool.max_memory_usage if options.memory_pool is not None else 0
        return TrtCompiledModel(trt, engine, graph, settings, profiles, placement, max_memory_usage=budget)


def _model_path(graph: Graph) -> str | None:
    """The model's file (the parser resolves external weights beside it), when it came from one."""
    source = Path(graph.source)
    return str(source) if source.suffix == ".onnx" and source.is_file() else None


_UNSUPPORTED: dict[str, tuple[str, ...]] = {}  # model fingerprint -> what the parser refused
_UNSUPPORTED_KEPT = 32


def _unsupported(graph: Graph) -> tuple[str, ...]:
    found = _UNSUPPORTED.get(graph.fingerprint)
    if found is None:
        from edgecore_cuda_trt.build import unsupported_nodes

        node_ops = [op_name(n.domain, n.op_type) for n in graph.to_proto().graph.node]
        found = tuple(unsupported_nodes(graph.to_bytes(), _model_path(graph), node_ops))
        if len(_UNSUPPORTED) >= _UNSUPPORTED_KEPT:
            _UNSUPPORTED.pop(next(iter(_UNSUPPORTED)))
        _UNSUPPORTED[graph.fingerprint] = found
    return found
