"""The ``torch`` backend: edgecore's own lowering of ONNX graphs to torch, on every device torch has.

``compile`` lowers the graph once (:mod:`edgecore_torch.lowering`: constants, folding), then the
compiled model records one plan per input signature (:mod:`edgecore_torch.plan`) and, on CUDA,
captures it as a CUDA graph (:mod:`edgecore_torch.compiled`). torch is imported here, not when the
plugin registers: ``edgecore backends`` lists the backend without importing torch until asked
whether it is available.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from edgecore.backend import Availability, Backend, CompileOptions, DeviceInfo
from edgecore.errors import BackendUnavailableError, UnsupportedOperatorError
from edgecore.tensor import DataType

if TYPE_CHECKING:
    from edgecore.graph import Graph

logger = logging.getLogger(__name__)

__all__ = ["TorchBackend", "device_facts"]

_MIN_VERSION = (2, 4)


@functools.cache
def _torch() -> Any:
    import torch

    return torch


def device_facts() -> Any:
    from edgecore_torch.options import DeviceFacts

    torch = _torch()
    mps = getattr(torch.backends, "mps", None)
    return DeviceFacts(
        cuda_count=torch.cuda.device_count() if torch.cuda.is_available() else 0,
        mps=bool(mps is not None and mps.is_available()),
        torch_version=torch.__version__,
        hip=bool(getattr(torch.version, "hip", None)),
    )


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


class TorchBackend(Backend):
    """ONNX graphs lowered to torch ops: CPU, CUDA (CUDA graphs), ROCm and MPS."""

    name = "torch"

    def availability(self) -> Availability:
        try:
            torch = _torch()
        except ImportError as exc:
            return Availability(ok=False, reason=f"torch is not installed ({exc}); pip install torch")
        if _version(torch.__version__) < _MIN_VERSION:
            return Availability(
                ok=False, reason=f"torch {torch.__version__} is too old; the torch backend needs torch >= 2.4"
            )
        return Availability(ok=True)

    def devices(self) -> list[DeviceInfo]:
        torch = _torch()
        facts = device_facts()
        found = [
            DeviceInfo(
                name="cpu",
                kind="cpu",
                description=f"torch {torch.__version__} CPU",
                properties={"threads": torch.get_num_threads(), "torch": torch.__version__},
            )
        ]
        for index in range(facts.cuda_count):
            props = torch.cuda.get_device_properties(index)
            found.append(
                DeviceInfo(
                    name=f"cuda:{index}",
                    kind="gpu",
                    description=props.name,
                    properties={
                        "runtime": "rocm" if facts.hip else "cuda",
                        "version": torch.version.hip if facts.hip else torch.version.cuda,
                        "compute_capability": f"{props.major}.{props.minor}",
                        "memory_bytes": int(props.total_memory),
                        "multiprocessors": int(props.multi_processor_count),
                    },
                )
            )
        if facts.mps:
            found.append(DeviceInfo(name="mps", kind="gpu", description="Apple Metal (MPS)"))
        return found

    def unsupported_ops(self, graph: Graph) -> list[str]:
        from edgecore_torch.lowering import unsupported_ops

        return unsupported_ops(graph)

    def compile(self, graph: Graph, options: CompileOptions) -> Any:
        availability = self.availability()
        if not availability.ok:
            raise BackendUnavailableError(f"backend 'torch' is unavailable: {availability.reason}")
        torch = _torch()
        from edgecore_torch.compiled import TorchCompiledModel
        from edgecore_torch.lowering import lower
        from edgecore_torch.options import TorchOptions

        settings = TorchOptions.from_compile_options(options, device_facts())
        untyped = _untyped(graph)
        if untyped:
            raise UnsupportedOperatorError(
                f"{graph.name}: torch has no tensors of type {', '.join(sorted(untyped))} "
                f"(tensors {sorted(n for names in untyped.values() for n in names)[:8]}); use the cpu_simd backend",
                ops=tuple(f"{t} tensors" for t in sorted(untyped)),
            )
        missing = self.unsupported_ops(graph)
        if missing:
            raise UnsupportedOperatorError(
                f"{graph.name}: the torch backend cannot run {missing}", ops=tuple(missing), available={}
            )
        if settings.num_threads:
            torch.set_num_threads(settings.num_threads)  # process-wide in torch
        if settings.cudnn_benchmark is not None:
            torch.backends.cudnn.benchmark = settings.cudnn_benchmark
        program = lower(graph, fold_batchnorm=settings.fold_batchnorm, fuse=settings.fuse)
        logger.debug(
            "torch: lowered %s: %d nodes left, %d folded, %d batch norms folded into convolutions, fused %s",
            graph.name,
            len(program.nodes),
            program.folded_nodes,
            program.folded_batchnorms,
            program.fused,
        )
        return TorchCompiledModel(program, graph, settings)


def _untyped(graph: Graph) -> dict[str, list[str]]:
    """Element types of inputs, outputs and initializers that torch cannot hold, with tensor names."""
    from edgecore_torch.ops import torch_dtype

    found: dict[str, list[str]] = {}

    def note(elem: int, name: str) -> None:
        try:
            torch_dtype(elem)
        except NotImplementedError:
            found.setdefault(DataType(elem).name.lower() if elem in DataType._value2member_map_ else str(elem), []).append(name)

    for spec in (*graph.inputs, *graph.outputs):
        note(int(spec.dtype), spec.name)
    for name, value in graph.model.graph.initializers.items():
        if value.dtype is not None:
            note(int(value.dtype), name)
    return found
